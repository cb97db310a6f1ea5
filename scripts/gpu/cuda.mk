# Builds the CUDA backend and its test/benchmark programs without node-gyp (the GPU machines have no
# npm): make -f scripts/gpu/cuda.mk -j16 [lib|tests|addon|all]
#   lib    native/build/cuda/libvqalab_cuda.a   (what native/build.js links into the addon)
#   tests  native/build/cuda/{test_ops,test_model,bench_grpo} (with native/dev/flash_variants.cu: the attention
#          kernel variants test_ops compares with the engine's; never in the addon)
#   addon  native/build/Release/vqalab.node with the CUDA backend (needs NODE_API_INCLUDE: node_api.h,
#          and NAPI_INCLUDE: napi.h of node-addon-api), compiled with binding.gyp's flags
# CUDA_HOME (default /usr/local/cuda) must hold nvcc; CUBLAS_INC / CUBLAS_LIB default to CUDA_HOME's.
CUDA_HOME ?= /usr/local/cuda
NVCC ?= $(CUDA_HOME)/bin/nvcc
CUBLAS_INC ?= $(CUDA_HOME)/include
CUBLAS_LIB ?= $(CUDA_HOME)/lib64
CUDA_LIB ?= $(CUDA_HOME)/lib64
ARCH ?= -gencode=arch=compute_90,code=sm_90
OUT := native/build/cuda
SRC := native/src
NVFLAGS := -std=c++17 -O3 $(ARCH) -I$(SRC) -I$(CUBLAS_INC) -Xcompiler -fPIC -Xcompiler -Wall \
           -diag-suppress 3357 --expt-relaxed-constexpr
CXXFLAGS := -std=c++17 -O3 -fPIC -fopenmp-simd -fno-math-errno -Wall -Wextra -Wno-unused-parameter -I$(SRC)

# every .cu of native/src/cuda (by layer: docs/cuda.md, "Design")
CU_SRCS := $(sort $(basename $(notdir $(wildcard $(SRC)/cuda/*.cu))))
CU_OBJS := $(patsubst %,$(OUT)/cu_%.o,$(CU_SRCS))
CPU_SRCS := common json config_check safetensors cpu/threadpool cpu/gemm ops/embedding ops/norm ops/linear ops/rope \
            ops/attention ops/activation ops/logprob ops/adamw model model_load model_dist collective_cpu sampler
CPU_OBJS := $(patsubst %,$(OUT)/cpu_%.o,$(subst /,_,$(CPU_SRCS))) $(OUT)/cpu_gemm_avx2.o
LINK := -L$(CUBLAS_LIB) -L$(CUDA_LIB) -lcublasLt -lcudart -ldl -lpthread -Wl,-rpath,$(CUBLAS_LIB) -Wl,-rpath,$(CUDA_LIB)

all: lib tests
lib: $(OUT)/libvqalab_cuda.a
tests: $(OUT)/test_ops $(OUT)/test_model $(OUT)/bench_grpo

$(OUT)/cu_%.o: $(SRC)/cuda/%.cu $(wildcard $(SRC)/cuda/*.h $(SRC)/cuda/*.cuh) $(SRC)/model.h $(SRC)/ops/ops.h
	@mkdir -p $(OUT)
	$(NVCC) $(NVFLAGS) -c $< -o $@

$(OUT)/libvqalab_cuda.a: $(CU_OBJS)
	ar rcs $@ $^

define cpu_rule
$(OUT)/cpu_$(subst /,_,$(1)).o: $(SRC)/$(1).cc
	@mkdir -p $(OUT)
	$$(CXX) $$(CXXFLAGS) -c $$< -o $$@
endef
$(foreach s,$(CPU_SRCS),$(eval $(call cpu_rule,$(s))))
$(OUT)/cpu_gemm_avx2.o: $(SRC)/cpu/gemm_avx2.cc
	@mkdir -p $(OUT)
	$(CXX) $(CXXFLAGS) -mavx2 -mfma -c $< -o $@

$(OUT)/dev_%.o: native/dev/%.cu $(wildcard $(SRC)/cuda/*.h $(SRC)/cuda/*.cuh native/dev/*.h) $(SRC)/model.h
	@mkdir -p $(OUT)
	$(NVCC) $(NVFLAGS) -c $< -o $@

DEV_OBJS := $(OUT)/dev_flash_variants.o
$(OUT)/%: $(OUT)/dev_%.o $(DEV_OBJS) $(OUT)/libvqalab_cuda.a $(CPU_OBJS)
	$(CXX) -o $@ $< $(DEV_OBJS) $(OUT)/libvqalab_cuda.a $(CPU_OBJS) $(LINK)

# The addon, as node-gyp would build it (binding.gyp's flags), plus the CUDA backend.
NAPI_DEFS := -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -DNODE_ADDON_API_DISABLE_DEPRECATED -DVQALAB_CUDA
NAPI_SRCS := addon napi_model napi_ops napi_collective
NAPI_OBJS := $(patsubst %,$(OUT)/napi_%.o,$(NAPI_SRCS))
$(OUT)/napi_%.o: $(SRC)/%.cc
	@mkdir -p $(OUT)
	$(CXX) $(CXXFLAGS) $(NAPI_DEFS) -I$(NODE_API_INCLUDE) -I$(NAPI_INCLUDE) -c $< -o $@
addon: native/build/Release/vqalab.node
native/build/Release/vqalab.node: $(NAPI_OBJS) $(CPU_OBJS) $(OUT)/libvqalab_cuda.a
	@mkdir -p native/build/Release
	$(CXX) -shared -o $@ $(NAPI_OBJS) $(CPU_OBJS) $(OUT)/libvqalab_cuda.a $(LINK)

.PHONY: all lib tests addon
.SECONDARY:
