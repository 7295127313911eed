// Shared by the nvcc-built test programs.
#pragma once
#include <cstdio>
#include <cstdlib>
#define RT(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { \
    std::printf("FAIL %s:%d: %s -> %d (%s)\n", __FILE__, __LINE__, #call, (int)e_, cudaGetErrorString(e_)); std::exit(1); } } while (0)
#define EXPECT(c, ...) do { if (!(c)) { std::printf("FAIL line %d: ", __LINE__); std::printf(__VA_ARGS__); std::printf("\n"); std::exit(1); } } while (0)
