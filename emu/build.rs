//! Link flags of the shared library: never unloaded (stream threads run inside it, and a
//! probe that opens and closes it must not tear its state down), and named as the driver
//! library.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so.1");
}
