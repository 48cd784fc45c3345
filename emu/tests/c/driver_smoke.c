/* A C program using the emulated device through the CUDA driver API as any C program would
 * (linked with -lcuda; the declarations are the driver API's, written out so that no CUDA
 * headers are needed): PTX text loaded with cuModuleLoadData, a kernel launched eagerly and
 * through a captured graph, copies both ways. Prints "ok" and exits 0 when every result is
 * right. */
#include <stdio.h>
#include <string.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext, *CUmodule, *CUfunction, *CUstream, *CUgraph, *CUgraphExec;
typedef unsigned long long CUdeviceptr;

CUresult cuInit(unsigned flags);
CUresult cuDeviceGet(CUdevice *d, int ordinal);
CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d);
CUresult cuCtxSetCurrent(CUcontext c);
CUresult cuModuleLoadData(CUmodule *m, const void *image);
CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name);
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n);
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void *s, size_t n);
CUresult cuMemcpyDtoH_v2(void *d, CUdeviceptr s, size_t n);
CUresult cuStreamCreate(CUstream *s, unsigned flags);
CUresult cuStreamSynchronize(CUstream s);
CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned shared, CUstream s, void **params,
                        void **extra);
CUresult cuStreamBeginCapture_v2(CUstream s, int mode);
CUresult cuStreamEndCapture(CUstream s, CUgraph *g);
CUresult cuGraphInstantiateWithFlags(CUgraphExec *e, CUgraph g, unsigned long long flags);
CUresult cuGraphLaunch(CUgraphExec e, CUstream s);
CUresult cuGetErrorName(CUresult r, const char **s);

static const char *PTX =
    ".version 9.0\n.target sm_80\n.address_size 64\n"
    ".visible .entry scale(.param .u64 p, .param .f32 a)\n{\n"
    "  .reg .b32 %r<2>;\n  .reg .f32 %f<3>;\n  .reg .b64 %rd<4>;\n"
    "  ld.param.u64 %rd1, [p];\n  ld.param.f32 %f1, [a];\n  mov.u32 %r1, %tid.x;\n"
    "  mul.wide.u32 %rd2, %r1, 4;\n  add.s64 %rd3, %rd1, %rd2;\n"
    "  ld.global.f32 %f2, [%rd3];\n  mul.f32 %f2, %f2, %f1;\n  st.global.f32 [%rd3], %f2;\n"
    "  ret;\n}\n";

#define CHECK(call)                                                     \
    do {                                                                \
        CUresult r_ = (call);                                           \
        if (r_ != 0) {                                                  \
            const char *n_ = "?";                                       \
            cuGetErrorName(r_, &n_);                                    \
            fprintf(stderr, "%s failed: %s (%d)\n", #call, n_, r_);     \
            return 1;                                                   \
        }                                                               \
    } while (0)

int main(void) {
    CUdevice dev;
    CUcontext ctx;
    CUmodule mod;
    CUfunction f;
    CUstream s;
    CUdeviceptr buf;
    float host[64];
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuModuleLoadData(&mod, PTX));
    CHECK(cuModuleGetFunction(&f, mod, "scale"));
    for (int i = 0; i < 64; i++) host[i] = (float)i;
    CHECK(cuMemAlloc_v2(&buf, sizeof host));
    CHECK(cuMemcpyHtoD_v2(buf, host, sizeof host));
    CHECK(cuStreamCreate(&s, 1));
    float a = 2.0f;
    void *params[] = {&buf, &a};
    CHECK(cuLaunchKernel(f, 1, 1, 1, 64, 1, 1, 0, s, params, NULL));
    /* The same launch captured and replayed twice: x * 2 * 2 * 2. */
    CUgraph g;
    CUgraphExec e;
    CHECK(cuStreamBeginCapture_v2(s, 1));
    CHECK(cuLaunchKernel(f, 1, 1, 1, 64, 1, 1, 0, s, params, NULL));
    CHECK(cuStreamEndCapture(s, &g));
    CHECK(cuGraphInstantiateWithFlags(&e, g, 0));
    CHECK(cuGraphLaunch(e, s));
    CHECK(cuGraphLaunch(e, s));
    CHECK(cuStreamSynchronize(s));
    CHECK(cuMemcpyDtoH_v2(host, buf, sizeof host));
    for (int i = 0; i < 64; i++) {
        if (host[i] != 8.0f * (float)i) {
            fprintf(stderr, "element %d: %f\n", i, host[i]);
            return 1;
        }
    }
    printf("ok\n");
    return 0;
}
