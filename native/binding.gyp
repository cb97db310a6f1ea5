# The native engine. Built by native/build.js (npm's `install` script) with node-gyp.
# The CPU engine is portable C++17; the AVX2/FMA GEMM micro-kernel lives in its own static library
# compiled with -mavx2 -mfma and is chosen at run time when the CPU has both.
{
  "target_defaults": {
    "cflags!": ["-fno-exceptions", "-fno-rtti"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++1y", "-std=gnu++17"],
    "cflags_cc": ["-std=c++17", "-O3", "-fopenmp-simd", "-fno-math-errno", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "src"],
  },
  "targets": [
    {
      "target_name": "vqalab_avx2",
      "type": "static_library",
      "cflags": ["-fPIC"],
      "cflags_cc": ["-mavx2", "-mfma", "-fPIC"],
      "sources": ["src/cpu/gemm_avx2.cc"],
    },
    {
      "target_name": "vqalab",
      "dependencies": ["vqalab_avx2"],
      "sources": [
        "src/addon.cc",
        "src/napi_model.cc",
        "src/napi_ops.cc",
        "src/napi_collective.cc",
        "src/collective_cpu.cc",
        "src/model_dist.cc",
        "src/common.cc",
        "src/json.cc",
        "src/safetensors.cc",
        "src/config_check.cc",
        "src/cpu/threadpool.cc",
        "src/cpu/gemm.cc",
        "src/ops/embedding.cc",
        "src/ops/norm.cc",
        "src/ops/linear.cc",
        "src/ops/rope.cc",
        "src/ops/attention.cc",
        "src/ops/activation.cc",
        "src/ops/logprob.cc",
        "src/ops/adamw.cc",
        "src/model.cc",
        "src/model_load.cc",
        "src/sampler.cc",
      ],
      "libraries": ["-lpthread"],
      # The CUDA backend (issue 10): native/build.js builds native/build/cuda/libvqalab_cuda.a with
      # nvcc (scripts/gpu/cuda.mk) when nvcc >= 12 and cuBLASLt are found, and passes it here.
      "variables": {
        "cuda_lib%": "<!(node -p \"process.env.VQALAB_CUDA_LIB || ''\")",
        "cuda_libdir%": "<!(node -p \"process.env.VQALAB_CUDA_LIBDIR || ''\")",
        "cublas_libdir%": "<!(node -p \"process.env.VQALAB_CUBLAS_LIBDIR || ''\")",
      },
      "conditions": [
        ["cuda_lib!=''", {
          "defines": ["VQALAB_CUDA"],
          "libraries": ["<(cuda_lib)", "-L<(cublas_libdir)", "-L<(cuda_libdir)", "-lcublasLt", "-lcudart", "-ldl",
                        "-Wl,-rpath,<(cublas_libdir)", "-Wl,-rpath,<(cuda_libdir)"],
        }],
      ],
    },
  ],
}
