//! Driver API entry points: initialization and devices.

use std::ffi::{c_char, c_int, c_uint};

use super::{out, run};
use crate::device::{self, ARCH, CUresult, SM_COUNT, fail};

/// The driver version reported (CUDA 13.0).
pub const DRIVER_VERSION: c_int = 13000;

/// Name every emulated device reports; tools check for it to know their timings mean
/// nothing.
pub const DEVICE_NAME: &str = "tandem-emu (emulated sm_90)";

#[unsafe(no_mangle)]
pub extern "C" fn cuInit(flags: c_uint) -> CUresult {
    run("cuInit", || {
        if flags != 0 {
            return fail(CUresult::CUDA_ERROR_INVALID_VALUE, "cuInit flags must be 0");
        }
        device::init().map(drop)
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDriverGetVersion(v: *mut c_int) -> CUresult {
    run("cuDriverGetVersion", || unsafe {
        out(v, DRIVER_VERSION, "cuDriverGetVersion")
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetCount(n: *mut c_int) -> CUresult {
    run("cuDeviceGetCount", || {
        let d = device::driver()?;
        unsafe { out(n, d.devices.len() as c_int, "cuDeviceGetCount") }
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGet(dev: *mut c_int, ordinal: c_int) -> CUresult {
    run("cuDeviceGet", || {
        device::device(ordinal)?;
        unsafe { out(dev, ordinal, "cuDeviceGet") }
    })
}

/// # Safety
/// C caller: `name` holds `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: c_int) -> CUresult {
    run("cuDeviceGetName", || {
        device::device(dev)?;
        if name.is_null() || len <= 0 {
            return fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                "cuDeviceGetName: no buffer",
            );
        }
        let bytes = DEVICE_NAME.as_bytes();
        let n = bytes.len().min(len as usize - 1);
        // SAFETY: the buffer holds len bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), name as *mut u8, n);
            *name.add(n) = 0;
        }
        Ok(())
    })
}

fn uuid_bytes(dev: c_int) -> [u8; 16] {
    let mut u = *b"tandem-emu-dev\0\0";
    u[15] = dev as u8;
    u
}

/// # Safety
/// C caller: 16 writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetUuid(uuid: *mut [u8; 16], dev: c_int) -> CUresult {
    run("cuDeviceGetUuid", || {
        device::device(dev)?;
        unsafe { out(uuid, uuid_bytes(dev), "cuDeviceGetUuid") }
    })
}

/// # Safety
/// C caller: 16 writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetUuid_v2(uuid: *mut [u8; 16], dev: c_int) -> CUresult {
    unsafe { cuDeviceGetUuid(uuid, dev) }
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: c_int) -> CUresult {
    run("cuDeviceTotalMem", || {
        let d = device::device(dev)?;
        unsafe { out(bytes, d.budget.total, "cuDeviceTotalMem") }
    })
}

/// The value of device attribute `a` (CUdevice_attribute), as an H100/H200 SXM reports it,
/// or None for an attribute the emulator does not model.
pub fn attribute(a: c_int, ordinal: c_int) -> Option<c_int> {
    Some(match a {
        1 => 1024,                  // MAX_THREADS_PER_BLOCK
        2 | 3 => 1024,              // MAX_BLOCK_DIM_X/Y
        4 => 64,                    // MAX_BLOCK_DIM_Z
        5 => i32::MAX,              // MAX_GRID_DIM_X
        6 | 7 => 65535,             // MAX_GRID_DIM_Y/Z
        8 => 49152,                 // MAX_SHARED_MEMORY_PER_BLOCK
        9 => 65536,                 // TOTAL_CONSTANT_MEMORY
        10 => 32,                   // WARP_SIZE
        11 => i32::MAX,             // MAX_PITCH
        12 => 65536,                // MAX_REGISTERS_PER_BLOCK
        13 => 1_980_000,            // CLOCK_RATE (kHz)
        14 => 512,                  // TEXTURE_ALIGNMENT
        15 => 1,                    // GPU_OVERLAP
        16 => SM_COUNT as c_int,    // MULTIPROCESSOR_COUNT
        17 => 0,                    // KERNEL_EXEC_TIMEOUT
        18 => 0,                    // INTEGRATED
        19 => 1,                    // CAN_MAP_HOST_MEMORY
        20 => 0,                    // COMPUTE_MODE (default)
        31 => 1,                    // CONCURRENT_KERNELS
        32 => 1,                    // ECC_ENABLED
        33 => 0,                    // PCI_BUS_ID
        34 => ordinal,              // PCI_DEVICE_ID
        35 => 0,                    // TCC_DRIVER
        36 => 2_619_000,            // MEMORY_CLOCK_RATE (kHz)
        37 => 5120,                 // GLOBAL_MEMORY_BUS_WIDTH
        38 => 52_428_800,           // L2_CACHE_SIZE
        39 => 2048,                 // MAX_THREADS_PER_MULTIPROCESSOR
        40 => 3,                    // ASYNC_ENGINE_COUNT
        41 => 1,                    // UNIFIED_ADDRESSING
        50 => 0,                    // PCI_DOMAIN_ID
        75 => (ARCH / 10) as c_int, // COMPUTE_CAPABILITY_MAJOR
        76 => (ARCH % 10) as c_int, // COMPUTE_CAPABILITY_MINOR
        78 => 1,                    // STREAM_PRIORITIES_SUPPORTED
        79 | 80 => 1,               // GLOBAL/LOCAL_L1_CACHE_SUPPORTED
        81 => 233_472,              // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
        82 => 65536,                // MAX_REGISTERS_PER_MULTIPROCESSOR
        83 => 1,                    // MANAGED_MEMORY
        84 => 0,                    // MULTI_GPU_BOARD
        86 => 1,                    // HOST_NATIVE_ATOMIC_SUPPORTED
        88 => 0,                    // PAGEABLE_MEMORY_ACCESS
        89 => 1,                    // CONCURRENT_MANAGED_ACCESS
        90 => 1,                    // COMPUTE_PREEMPTION_SUPPORTED
        91 => 1,                    // CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM
        95 => 1,                    // COOPERATIVE_LAUNCH
        97 => 232_448,              // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        106 => 32,                  // MAX_BLOCKS_PER_MULTIPROCESSOR
        111 => 1024,                // RESERVED_SHARED_MEMORY_PER_BLOCK
        115 => 1,                   // MEMORY_POOLS_SUPPORTED
        _ => return None,
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetAttribute(
    v: *mut c_int,
    attrib: c_int,
    dev: c_int,
) -> CUresult {
    run("cuDeviceGetAttribute", || {
        device::device(dev)?;
        match attribute(attrib, dev) {
            Some(x) => unsafe { out(v, x, "cuDeviceGetAttribute") },
            None => fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                format!("cuDeviceGetAttribute: attribute {attrib} is not emulated"),
            ),
        }
    })
}

/// # Safety
/// C caller: valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceCanAccessPeer(
    can: *mut c_int,
    dev: c_int,
    peer: c_int,
) -> CUresult {
    run("cuDeviceCanAccessPeer", || {
        device::device(dev)?;
        device::device(peer)?;
        unsafe { out(can, (dev != peer) as c_int, "cuDeviceCanAccessPeer") }
    })
}
