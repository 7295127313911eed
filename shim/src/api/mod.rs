//! The implemented driver functions.
//!
//! Each line of the table below binds one exported symbol to its implementation, grouped by
//! API family (`cuMemAlloc_v2` -> `memory::mem_alloc`). Per-thread-default-stream variants
//! (`_ptds`, `_ptsz`) share their implementation: this shim runs every default stream in order.
//! Every symbol not listed keeps the trait's default body: logged once, `NOT_SUPPORTED`.
//!
//! A line names the C arguments (the signature, with their C types, comes from the generated
//! table) and says what to call. Each argument is converted by [`ffi::FromCuda`] into the type
//! the implementation's parameter asks for: out-pointers become `&mut T` and a NULL one is
//! refused with `CUDA_ERROR_INVALID_VALUE` there, so implementations are safe functions over
//! references. An argument the implementation does not use is marked `_name: Ignored`. A line
//! whose arguments do not match the generated signature in number does not compile.

pub mod attributes;
pub mod capture;
pub mod context;
pub mod device;
pub mod device_alloc;
pub mod graph;
pub mod graph_exec;
pub mod graph_nodes;
pub mod image;
pub mod init;
pub mod ipc;
pub mod launch;
pub mod local_image;
pub mod managed;
pub mod memory;
pub mod mempool;
pub mod module;
pub mod params;
pub mod pool_props;
pub mod stream;

use crate::driver::{self, Driver};
use crate::ffi::{self, FromCuda, Ignored, ShimResult};
use crate::generated::types::*;

/// The shim's implementation of the driver API.
pub struct Shim;

/// Turns the table into `dispatch!`, which `driver_functions!` below calls once per generated
/// symbol with its C arguments and signature: a listed symbol becomes a `Driver` method that
/// converts each argument and runs the line's expression; any other becomes nothing (the
/// trait's default, "not supported"). `$d` is a literal `$`, for the generated macro's own
/// metavariables.
macro_rules! implement {
    ($d:tt $( $name:ident ( $($p:ident $(: $t:ty)?),* ) => $body:expr; )*) => {
        macro_rules! dispatch {
            $(
                ($name [$($d $p:ident)*] $d sig:tt) => {
                    #[allow(non_snake_case, clippy::too_many_arguments)]
                    unsafe fn $name $d sig -> CUresult {
                        let run = || -> ShimResult<()> {
                            $(
                                // SAFETY: the argument is as the driver API documents it.
                                let $p $(: $t)? = unsafe { FromCuda::from_cuda(&$d $p) }?;
                            )*
                            // SAFETY: the converted arguments are what the implementation's
                            // contract asks for; raw pointers among them are the caller's.
                            #[allow(unused_unsafe)]
                            unsafe { $body }
                        };
                        ffi::finish(stringify!($name), run())
                    }
                };
                ($name $d($d rest:tt)*) => {
                    compile_error!(concat!(
                        "the arguments of ", stringify!($name),
                        " do not match the generated signature"
                    ));
                };
            )*
            ($d other:ident $d($d rest:tt)*) => {};
        }
    };
}

macro_rules! implement_driver {
    ($($name:ident($($arg:ident: $ty:ty),* $(,)?);)*) => {
        impl Driver for Shim {
            $( dispatch!($name [$($arg)*] ($($arg: $ty),*)); )*
        }
    };
}

fn geometry(
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared: c_uint,
) -> params::Geometry {
    params::Geometry {
        grid: [gx, gy, gz],
        block: [bx, by, bz],
        shared,
    }
}

implement! { $
    // Initialisation, versions, errors, entry points.
    cuInit(Flags) => init::init(Flags);
    cuDriverGetVersion(driverVersion) => init::driver_get_version(driverVersion);
    cuGetErrorName(error, pStr) => init::get_error_text(error, pStr, true);
    cuGetErrorString(error, pStr) => init::get_error_text(error, pStr, false);
    cuGetProcAddress(symbol, pfn, cudaVersion, flags) => init::get_proc_address(symbol, pfn, cudaVersion, flags, None, driver::symbol_address::<Shim>);
    cuGetProcAddress_v2(symbol, pfn, cudaVersion, flags, symbolStatus) => init::get_proc_address(symbol, pfn, cudaVersion, flags, symbolStatus, driver::symbol_address::<Shim>);
    cuGetExportTable(ppExportTable, pExportTableId) => init::get_export_table(ppExportTable, pExportTableId);

    // Devices.
    cuDeviceGetCount(count) => device::get_count(count);
    cuDeviceGet(device, ordinal) => device::get(device, ordinal);
    cuDeviceGetName(name, len, dev) => device::get_name(ffi::c_buffer(name, len)?, dev);
    cuDeviceGetUuid(uuid, dev) => device::get_uuid(uuid, dev);
    cuDeviceGetUuid_v2(uuid, dev) => device::get_uuid(uuid, dev);
    cuDeviceTotalMem_v2(bytes, dev) => device::total_mem(bytes, dev);
    cuDeviceGetAttribute(pi, attrib, dev) => device::get_attribute(pi, attrib, dev);
    cuDeviceComputeCapability(major, minor, dev) => device::compute_capability(major, minor, dev);
    cuDeviceGetPCIBusId(pciBusId, len, dev) => device::get_pci_bus_id(ffi::c_buffer(pciBusId, len)?, dev);
    cuDeviceGetByPCIBusId(dev, pciBusId) => device::get_by_pci_bus_id(dev, pciBusId);
    cuDeviceCanAccessPeer(canAccessPeer, dev, peerDev) => device::can_access_peer(canAccessPeer, dev, peerDev);
    cuDeviceGetProperties(prop, dev) => device::get_properties(prop, dev);

    // Primary contexts.
    cuDevicePrimaryCtxRetain(pctx, dev) => context::primary_retain(pctx, dev);
    cuDevicePrimaryCtxRelease(dev) => context::primary_release(dev);
    cuDevicePrimaryCtxRelease_v2(dev) => context::primary_release(dev);
    cuDevicePrimaryCtxReset(dev) => context::primary_reset(dev);
    cuDevicePrimaryCtxReset_v2(dev) => context::primary_reset(dev);
    cuDevicePrimaryCtxSetFlags(dev, flags) => context::primary_set_flags(dev, flags);
    cuDevicePrimaryCtxSetFlags_v2(dev, flags) => context::primary_set_flags(dev, flags);
    cuDevicePrimaryCtxGetState(dev, flags, active) => context::primary_get_state(dev, flags, active);

    // Contexts.
    cuCtxCreate(pctx, flags, dev) => context::create(pctx, flags, dev);
    cuCtxCreate_v2(pctx, flags, dev) => context::create(pctx, flags, dev);
    cuCtxCreate_v3(pctx, _paramsArray: Ignored, _numParams: Ignored, flags, dev) => context::create(pctx, flags, dev);
    cuCtxCreate_v4(pctx, _ctxCreateParams: Ignored, flags, dev) => context::create(pctx, flags, dev);
    cuCtxDestroy(ctx) => context::destroy(ctx);
    cuCtxDestroy_v2(ctx) => context::destroy(ctx);
    cuCtxPushCurrent(ctx) => context::push(ctx);
    cuCtxPushCurrent_v2(ctx) => context::push(ctx);
    cuCtxPopCurrent(pctx) => context::pop(pctx);
    cuCtxPopCurrent_v2(pctx) => context::pop(pctx);
    cuCtxSetCurrent(ctx) => context::set_current(ctx);
    cuCtxGetCurrent(pctx) => context::get_current(pctx);
    cuCtxGetDevice(device) => context::get_device(device, 0);
    cuCtxGetDevice_v2(device, ctx) => context::get_device(device, ctx);
    cuCtxSynchronize() => context::synchronize(0);
    cuCtxSynchronize_v2(ctx) => context::synchronize(ctx);
    cuCtxGetLimit(pvalue, limit) => context::get_limit(pvalue, limit);
    cuCtxSetLimit(limit, value) => context::set_limit(limit, value);
    cuCtxGetApiVersion(ctx, version) => context::get_api_version(ctx, version);
    cuCtxGetFlags(flags) => context::get_flags(flags);
    cuCtxSetFlags(flags) => context::set_flags(flags);
    cuCtxGetCacheConfig(pconfig) => context::get_config(pconfig, 0);
    cuCtxSetCacheConfig(_config: Ignored) => context::set_config();
    cuCtxGetSharedMemConfig(pConfig) => context::get_config(pConfig, 1);
    cuCtxSetSharedMemConfig(_config: Ignored) => context::set_config();
    cuCtxGetStreamPriorityRange(leastPriority, greatestPriority) => context::stream_priority_range(leastPriority, greatestPriority);
    cuCtxGetId(ctx, ctxId) => context::get_id(ctx, ctxId);

    // Profiler ranges.
    cuProfilerStart() => context::profiler_range();
    cuProfilerStop() => context::profiler_range();
    cuProfilerInitialize(_configFile: Ignored, _outputFile: Ignored, _outputMode: Ignored) => context::profiler_initialize();

    // Device memory.
    cuMemAlloc_v2(dptr, bytesize) => memory::mem_alloc(dptr, bytesize);
    cuMemAllocPitch_v2(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes) => memory::alloc_pitch(dptr, pPitch, WidthInBytes, Height, ElementSizeBytes);
    cuIpcGetMemHandle(pHandle, dptr) => ipc::get_mem_handle(pHandle, dptr);
    cuIpcOpenMemHandle_v2(pdptr, handle, Flags) => ipc::open_mem_handle(pdptr, handle, Flags);
    cuIpcCloseMemHandle(dptr) => ipc::close_mem_handle(dptr);
    cuMemFree_v2(dptr) => memory::free(dptr);
    cuMemGetInfo_v2(free, total) => memory::get_info(free, total);
    cuMemGetAddressRange_v2(pbase, psize, dptr) => memory::get_address_range(pbase, psize, dptr);

    // Managed memory.
    cuMemAllocManaged(dptr, bytesize, flags) => managed::alloc(dptr, bytesize, flags);
    cuMemAdvise(devPtr, count, advice, _device: Ignored) => managed::advise(devPtr, count, advice);
    cuMemAdvise_v2(devPtr, count, advice, _location: Ignored) => managed::advise(devPtr, count, advice);
    cuMemPrefetchAsync(devPtr, count, dstDevice, hStream) => managed::prefetch(devPtr, count, dstDevice, hStream);
    cuMemPrefetchAsync_ptsz(devPtr, count, dstDevice, hStream) => managed::prefetch(devPtr, count, dstDevice, hStream);
    cuStreamAttachMemAsync(hStream, dptr, length, flags) => managed::attach(hStream, dptr, length, flags);
    cuStreamAttachMemAsync_ptsz(hStream, dptr, length, flags) => managed::attach(hStream, dptr, length, flags);

    // Copies.
    cuMemcpyHtoD_v2(dstDevice, srcHost, ByteCount) => memory::htod(dstDevice, ffi::bytes(srcHost, ByteCount)?, 0);
    cuMemcpyHtoD_v2_ptds(dstDevice, srcHost, ByteCount) => memory::htod(dstDevice, ffi::bytes(srcHost, ByteCount)?, 0);
    cuMemcpyHtoDAsync_v2(dstDevice, srcHost, ByteCount, hStream) => memory::htod(dstDevice, ffi::bytes(srcHost, ByteCount)?, hStream);
    cuMemcpyHtoDAsync_v2_ptsz(dstDevice, srcHost, ByteCount, hStream) => memory::htod(dstDevice, ffi::bytes(srcHost, ByteCount)?, hStream);
    cuMemcpyDtoH_v2(dstHost, srcDevice, ByteCount) => memory::dtoh(ffi::bytes_mut(dstHost, ByteCount)?, srcDevice, 0);
    cuMemcpyDtoH_v2_ptds(dstHost, srcDevice, ByteCount) => memory::dtoh(ffi::bytes_mut(dstHost, ByteCount)?, srcDevice, 0);
    cuMemcpyDtoHAsync_v2(dstHost, srcDevice, ByteCount, hStream) => memory::copy_dtoh_async(dstHost, srcDevice, ByteCount, hStream);
    cuMemcpyDtoHAsync_v2_ptsz(dstHost, srcDevice, ByteCount, hStream) => memory::copy_dtoh_async(dstHost, srcDevice, ByteCount, hStream);
    cuMemcpyDtoD_v2(dstDevice, srcDevice, ByteCount) => memory::dtod(dstDevice, srcDevice, ByteCount, 0);
    cuMemcpyDtoD_v2_ptds(dstDevice, srcDevice, ByteCount) => memory::dtod(dstDevice, srcDevice, ByteCount, 0);
    cuMemcpyDtoDAsync_v2(dstDevice, srcDevice, ByteCount, hStream) => memory::dtod(dstDevice, srcDevice, ByteCount, hStream);
    cuMemcpyDtoDAsync_v2_ptsz(dstDevice, srcDevice, ByteCount, hStream) => memory::dtod(dstDevice, srcDevice, ByteCount, hStream);
    cuMemcpy(dst, src, ByteCount) => memory::copy_unified(dst, src, ByteCount, 0, false);
    cuMemcpy_ptds(dst, src, ByteCount) => memory::copy_unified(dst, src, ByteCount, 0, false);
    cuMemcpyAsync(dst, src, ByteCount, hStream) => memory::copy_unified(dst, src, ByteCount, hStream, true);
    cuMemcpyAsync_ptsz(dst, src, ByteCount, hStream) => memory::copy_unified(dst, src, ByteCount, hStream, true);

    // 2D copies.
    cuMemcpy2D_v2(pCopy) => memory::copy_2d(pCopy, 0, false);
    cuMemcpy2D_v2_ptds(pCopy) => memory::copy_2d(pCopy, 0, false);
    cuMemcpy2DUnaligned_v2(pCopy) => memory::copy_2d(pCopy, 0, false);
    cuMemcpy2DUnaligned_v2_ptds(pCopy) => memory::copy_2d(pCopy, 0, false);
    cuMemcpy2DAsync_v2(pCopy, hStream) => memory::copy_2d(pCopy, hStream, true);
    cuMemcpy2DAsync_v2_ptsz(pCopy, hStream) => memory::copy_2d(pCopy, hStream, true);

    // Memsets.
    cuMemsetD8_v2(dstDevice, uc, N) => memory::memset_d8(dstDevice, uc, N, 0);
    cuMemsetD8_v2_ptds(dstDevice, uc, N) => memory::memset_d8(dstDevice, uc, N, 0);
    cuMemsetD16_v2(dstDevice, us, N) => memory::memset_d16(dstDevice, us, N, 0);
    cuMemsetD16_v2_ptds(dstDevice, us, N) => memory::memset_d16(dstDevice, us, N, 0);
    cuMemsetD32_v2(dstDevice, ui, N) => memory::memset_d32(dstDevice, ui, N, 0);
    cuMemsetD32_v2_ptds(dstDevice, ui, N) => memory::memset_d32(dstDevice, ui, N, 0);
    cuMemsetD8Async(dstDevice, uc, N, hStream) => memory::memset_d8(dstDevice, uc, N, hStream);
    cuMemsetD8Async_ptsz(dstDevice, uc, N, hStream) => memory::memset_d8(dstDevice, uc, N, hStream);
    cuMemsetD16Async(dstDevice, us, N, hStream) => memory::memset_d16(dstDevice, us, N, hStream);
    cuMemsetD16Async_ptsz(dstDevice, us, N, hStream) => memory::memset_d16(dstDevice, us, N, hStream);
    cuMemsetD32Async(dstDevice, ui, N, hStream) => memory::memset_d32(dstDevice, ui, N, hStream);
    cuMemsetD32Async_ptsz(dstDevice, ui, N, hStream) => memory::memset_d32(dstDevice, ui, N, hStream);
    cuMemsetD2D8_v2(dstDevice, dstPitch, uc, Width, Height) => memory::memset_2d8(dstDevice, dstPitch, uc, Width, Height, 0);
    cuMemsetD2D8_v2_ptds(dstDevice, dstPitch, uc, Width, Height) => memory::memset_2d8(dstDevice, dstPitch, uc, Width, Height, 0);
    cuMemsetD2D16_v2(dstDevice, dstPitch, us, Width, Height) => memory::memset_2d16(dstDevice, dstPitch, us, Width, Height, 0);
    cuMemsetD2D16_v2_ptds(dstDevice, dstPitch, us, Width, Height) => memory::memset_2d16(dstDevice, dstPitch, us, Width, Height, 0);
    cuMemsetD2D32_v2(dstDevice, dstPitch, ui, Width, Height) => memory::memset_2d32(dstDevice, dstPitch, ui, Width, Height, 0);
    cuMemsetD2D32_v2_ptds(dstDevice, dstPitch, ui, Width, Height) => memory::memset_2d32(dstDevice, dstPitch, ui, Width, Height, 0);
    cuMemsetD2D8Async(dstDevice, dstPitch, uc, Width, Height, hStream) => memory::memset_2d8(dstDevice, dstPitch, uc, Width, Height, hStream);
    cuMemsetD2D8Async_ptsz(dstDevice, dstPitch, uc, Width, Height, hStream) => memory::memset_2d8(dstDevice, dstPitch, uc, Width, Height, hStream);
    cuMemsetD2D16Async(dstDevice, dstPitch, us, Width, Height, hStream) => memory::memset_2d16(dstDevice, dstPitch, us, Width, Height, hStream);
    cuMemsetD2D16Async_ptsz(dstDevice, dstPitch, us, Width, Height, hStream) => memory::memset_2d16(dstDevice, dstPitch, us, Width, Height, hStream);
    cuMemsetD2D32Async(dstDevice, dstPitch, ui, Width, Height, hStream) => memory::memset_2d32(dstDevice, dstPitch, ui, Width, Height, hStream);
    cuMemsetD2D32Async_ptsz(dstDevice, dstPitch, ui, Width, Height, hStream) => memory::memset_2d32(dstDevice, dstPitch, ui, Width, Height, hStream);

    // Page-locked host memory and pointer attributes.
    cuMemAllocHost_v2(pp, bytesize) => memory::host_alloc(pp, bytesize, 0);
    cuMemHostAlloc(pp, bytesize, Flags) => memory::host_alloc(pp, bytesize, Flags);
    cuMemFreeHost(p) => memory::free_host(p);
    cuMemHostRegister(p, bytesize, Flags) => memory::host_register(p, bytesize, Flags);
    cuMemHostRegister_v2(p, bytesize, Flags) => memory::host_register(p, bytesize, Flags);
    cuMemHostUnregister(p) => memory::host_unregister(p);
    cuMemHostGetFlags(pFlags, p) => memory::host_get_flags(pFlags, p);
    cuMemHostGetDevicePointer_v2(_pdptr: Ignored, _p: Ignored, _Flags: Ignored) => memory::host_get_device_pointer();
    cuPointerGetAttribute(data, attribute, ptr) => memory::pointer_get_attribute(data, attribute, ptr);
    cuPointerGetAttributes(numAttributes, attributes, data, ptr) => memory::pointer_get_attributes(numAttributes, attributes, data, ptr);

    // Streams.
    cuStreamCreate(phStream, Flags) => stream::create(phStream, Flags, 0);
    cuStreamCreateWithPriority(phStream, flags, priority) => stream::create(phStream, flags, priority);
    cuStreamDestroy(hStream) => stream::destroy(hStream);
    cuStreamDestroy_v2(hStream) => stream::destroy(hStream);
    cuStreamSynchronize(hStream) => stream::synchronize(hStream);
    cuStreamSynchronize_ptsz(hStream) => stream::synchronize(hStream);
    cuStreamQuery(hStream) => stream::query(hStream);
    cuStreamQuery_ptsz(hStream) => stream::query(hStream);
    cuStreamWaitEvent(hStream, hEvent, Flags) => stream::wait_event(hStream, hEvent, Flags);
    cuStreamWaitEvent_ptsz(hStream, hEvent, Flags) => stream::wait_event(hStream, hEvent, Flags);
    cuStreamGetFlags(hStream, flags) => stream::get_flags(hStream, flags);
    cuStreamGetFlags_ptsz(hStream, flags) => stream::get_flags(hStream, flags);
    cuStreamGetPriority(hStream, priority) => stream::get_priority(hStream, priority);
    cuStreamGetPriority_ptsz(hStream, priority) => stream::get_priority(hStream, priority);
    cuStreamGetCtx(hStream, pctx) => stream::get_ctx(hStream, pctx);
    cuStreamGetCtx_ptsz(hStream, pctx) => stream::get_ctx(hStream, pctx);
    cuStreamGetId(hStream, streamId) => stream::get_id(hStream, streamId);
    cuStreamGetId_ptsz(hStream, streamId) => stream::get_id(hStream, streamId);

    // Events.
    cuEventCreate(phEvent, Flags) => stream::event_create(phEvent, Flags);
    cuEventRecord(hEvent, hStream) => stream::event_record(hEvent, hStream);
    cuEventRecord_ptsz(hEvent, hStream) => stream::event_record(hEvent, hStream);
    cuEventRecordWithFlags(hEvent, hStream, flags) => stream::event_record_with_flags(hEvent, hStream, flags);
    cuEventRecordWithFlags_ptsz(hEvent, hStream, flags) => stream::event_record_with_flags(hEvent, hStream, flags);
    cuEventSynchronize(hEvent) => stream::event_synchronize(hEvent);
    cuEventQuery(hEvent) => stream::event_query(hEvent);
    cuEventElapsedTime(pMilliseconds, hStart, hEnd) => stream::event_elapsed(pMilliseconds, hStart, hEnd);
    cuEventElapsedTime_v2(pMilliseconds, hStart, hEnd) => stream::event_elapsed(pMilliseconds, hStart, hEnd);
    cuEventDestroy(hEvent) => stream::event_destroy(hEvent);
    cuEventDestroy_v2(hEvent) => stream::event_destroy(hEvent);

    // Host functions and callbacks.
    cuLaunchHostFunc(hStream, fn_, userData) => stream::launch_host_func(hStream, fn_, userData);
    cuLaunchHostFunc_ptsz(hStream, fn_, userData) => stream::launch_host_func(hStream, fn_, userData);
    cuStreamAddCallback(hStream, callback, userData, flags) => stream::add_callback(hStream, callback, userData, flags);
    cuStreamAddCallback_ptsz(hStream, callback, userData, flags) => stream::add_callback(hStream, callback, userData, flags);

    // Modules and libraries.
    cuModuleLoad(module, fname) => module::load_file(module, fname);
    cuModuleLoadData(module, image) => module::load_data(module, image, 0, std::ptr::null(), std::ptr::null());
    cuModuleLoadDataEx(module, image, numOptions, options, optionValues) => module::load_data(module, image, numOptions, options, optionValues);
    cuModuleLoadFatBinary(module, fatCubin) => module::load_data(module, fatCubin, 0, std::ptr::null(), std::ptr::null());
    cuModuleUnload(hmod) => module::unload(hmod);
    cuModuleGetFunction(hfunc, hmod, name) => module::get_function(hfunc, hmod, name);
    cuModuleGetGlobal_v2(dptr, bytes, hmod, name) => module::get_global(dptr, bytes, hmod, name);
    cuModuleGetLoadingMode(mode) => ffi::set(mode, 2); // CU_MODULE_LAZY_LOADING
    cuModuleGetFunctionCount(count, mod_) => module::function_count(count, mod_);
    cuModuleEnumerateFunctions(functions, numFunctions, mod_) => module::enumerate_functions(ffi::slice_mut(functions, numFunctions)?, mod_);
    cuLibraryLoadData(library, code, jitOptions, jitOptionsValues, numJitOptions, _libraryOptions: Ignored, _libraryOptionValues: Ignored, _numLibraryOptions: Ignored) => module::library_load_data(library, code, numJitOptions, jitOptions, jitOptionsValues);
    cuLibraryLoadFromFile(library, fileName, _jitOptions: Ignored, _jitOptionsValues: Ignored, _numJitOptions: Ignored, _libraryOptions: Ignored, _libraryOptionValues: Ignored, _numLibraryOptions: Ignored) => module::library_load_file(library, fileName);
    cuLibraryUnload(library) => module::library_unload(library);
    cuLibraryGetKernel(pKernel, library, name) => module::get_function(pKernel, library, name);
    cuLibraryGetModule(pMod, library) => module::library_get_module(pMod, library);
    cuLibraryGetGlobal(dptr, bytes, library, name) => module::get_global(dptr, bytes, library, name);
    cuLibraryGetKernelCount(count, lib) => module::function_count(count, lib);
    cuLibraryEnumerateKernels(kernels, numKernels, lib) => module::enumerate_functions(ffi::slice_mut(kernels, numKernels)?, lib);
    cuKernelGetFunction(pFunc, kernel) => module::kernel_get_function(pFunc, kernel);
    cuKernelGetLibrary(pLib, kernel) => module::kernel_get_library(pLib, kernel);
    cuKernelGetAttribute(pi, attrib, kernel, _dev: Ignored) => attributes::function_attribute(pi, attrib, kernel);
    cuKernelSetAttribute(attrib, val, kernel, _dev: Ignored) => module::set_attribute(kernel, attrib, val);
    cuKernelGetName(name, hfunc) => module::get_name(name, hfunc);
    cuKernelGetParamInfo(kernel, paramIndex, paramOffset, paramSize) => module::get_param_info(kernel, paramIndex, paramOffset, paramSize);
    cuKernelSetCacheConfig(kernel, _config: Ignored, _dev: Ignored) => module::check_function(kernel);

    // Functions.
    cuFuncGetAttribute(pi, attrib, hfunc) => attributes::function_attribute(pi, attrib, hfunc);
    cuFuncSetAttribute(hfunc, attrib, value) => module::set_attribute(hfunc, attrib, value);
    cuFuncSetCacheConfig(hfunc, _config: Ignored) => module::check_function(hfunc);
    cuFuncSetSharedMemConfig(hfunc, _config: Ignored) => module::check_function(hfunc);
    cuFuncGetParamInfo(func, paramIndex, paramOffset, paramSize) => module::get_param_info(func, paramIndex, paramOffset, paramSize);
    cuFuncGetName(name, hfunc) => module::get_name(name, hfunc);
    cuFuncGetModule(hmod, hfunc) => module::get_module(hmod, hfunc);
    cuFuncLoad(function) => module::check_function(function);
    cuFuncIsLoaded(state, function) => module::check_function(function).and_then(|()| ffi::set(state, 1));

    // Launches and occupancy.
    cuLaunchKernel(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes, hStream, kernelParams, extra) => launch::launch(f, geometry(gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes), hStream, kernelParams, extra);
    cuLaunchKernel_ptsz(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes, hStream, kernelParams, extra) => launch::launch(f, geometry(gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes), hStream, kernelParams, extra);
    cuLaunchCooperativeKernel(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes, hStream, kernelParams) => launch::launch_cooperative(f, geometry(gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes), hStream, kernelParams);
    cuLaunchCooperativeKernel_ptsz(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes, hStream, kernelParams) => launch::launch_cooperative(f, geometry(gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes), hStream, kernelParams);
    cuLaunchKernelEx(config, f, kernelParams, extra) => launch::launch_ex(config, f, kernelParams, extra);
    cuLaunchKernelEx_ptsz(config, f, kernelParams, extra) => launch::launch_ex(config, f, kernelParams, extra);
    cuOccupancyMaxActiveBlocksPerMultiprocessor(numBlocks, func, blockSize, dynamicSMemSize) => launch::max_active_blocks(numBlocks, func, blockSize, dynamicSMemSize);
    cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(numBlocks, func, blockSize, dynamicSMemSize, _flags: Ignored) => launch::max_active_blocks(numBlocks, func, blockSize, dynamicSMemSize);
    cuOccupancyMaxPotentialBlockSize(minGridSize, blockSize, func, blockSizeToDynamicSMemSize, dynamicSMemSize, blockSizeLimit) => launch::max_potential_block_size(minGridSize, blockSize, func, blockSizeToDynamicSMemSize, dynamicSMemSize, blockSizeLimit);
    cuOccupancyMaxPotentialBlockSizeWithFlags(minGridSize, blockSize, func, blockSizeToDynamicSMemSize, dynamicSMemSize, blockSizeLimit, _flags: Ignored) => launch::max_potential_block_size(minGridSize, blockSize, func, blockSizeToDynamicSMemSize, dynamicSMemSize, blockSizeLimit);
    cuOccupancyAvailableDynamicSMemPerBlock(dynamicSmemSize, func, numBlocks, blockSize) => launch::available_dynamic_shared(dynamicSmemSize, func, numBlocks, blockSize);

    // The linker (numba's driver path): PTX in, one PTX module out.
    cuLinkCreate(_numOptions: Ignored, _options: Ignored, _optionValues: Ignored, stateOut) => module::link_create(stateOut);
    cuLinkCreate_v2(_numOptions: Ignored, _options: Ignored, _optionValues: Ignored, stateOut) => module::link_create(stateOut);
    cuLinkAddData(state, _type_: Ignored, data, size, name, _numOptions: Ignored, _options: Ignored, _optionValues: Ignored) => module::link_add_data(state, ffi::bytes(data, size)?, name);
    cuLinkAddData_v2(state, _type_: Ignored, data, size, name, _numOptions: Ignored, _options: Ignored, _optionValues: Ignored) => module::link_add_data(state, ffi::bytes(data, size)?, name);
    cuLinkAddFile(state, _type_: Ignored, path, _numOptions: Ignored, _options: Ignored, _optionValues: Ignored) => module::link_add_file(state, path);
    cuLinkAddFile_v2(state, _type_: Ignored, path, _numOptions: Ignored, _options: Ignored, _optionValues: Ignored) => module::link_add_file(state, path);
    cuLinkComplete(state, cubinOut, sizeOut) => module::link_complete(state, cubinOut, sizeOut);
    cuLinkDestroy(state) => module::link_destroy(state);

    // Stream capture.
    cuStreamBeginCapture(hStream) => capture::begin(hStream, 0);
    cuStreamBeginCapture_ptsz(hStream) => capture::begin(hStream, 0);
    cuStreamBeginCapture_v2(hStream, mode) => capture::begin(hStream, mode);
    cuStreamBeginCapture_v2_ptsz(hStream, mode) => capture::begin(hStream, mode);
    cuStreamEndCapture(hStream, phGraph) => capture::end(hStream, phGraph);
    cuStreamEndCapture_ptsz(hStream, phGraph) => capture::end(hStream, phGraph);
    cuStreamIsCapturing(hStream, captureStatus) => capture::status(hStream, captureStatus, None);
    cuStreamIsCapturing_ptsz(hStream, captureStatus) => capture::status(hStream, captureStatus, None);
    cuStreamGetCaptureInfo(hStream, captureStatus_out, id_out) => capture::status(hStream, captureStatus_out, id_out);
    cuStreamGetCaptureInfo_ptsz(hStream, captureStatus_out, id_out) => capture::status(hStream, captureStatus_out, id_out);
    cuStreamGetCaptureInfo_v2(hStream, captureStatus_out, id_out, graph_out, dependencies_out, numDependencies_out) => capture::info(hStream, captureStatus_out, id_out, graph_out, dependencies_out, None, numDependencies_out);
    cuStreamGetCaptureInfo_v2_ptsz(hStream, captureStatus_out, id_out, graph_out, dependencies_out, numDependencies_out) => capture::info(hStream, captureStatus_out, id_out, graph_out, dependencies_out, None, numDependencies_out);
    cuStreamGetCaptureInfo_v3(hStream, captureStatus_out, id_out, graph_out, dependencies_out, edgeData_out, numDependencies_out) => capture::info(hStream, captureStatus_out, id_out, graph_out, dependencies_out, edgeData_out, numDependencies_out);
    cuStreamGetCaptureInfo_v3_ptsz(hStream, captureStatus_out, id_out, graph_out, dependencies_out, edgeData_out, numDependencies_out) => capture::info(hStream, captureStatus_out, id_out, graph_out, dependencies_out, edgeData_out, numDependencies_out);
    cuThreadExchangeStreamCaptureMode(mode) => capture::exchange_mode(mode);

    // Graphs: built and kept in the shim.
    cuGraphCreate(phGraph, flags) => graph::create(phGraph, flags);
    cuGraphDestroy(hGraph) => graph::destroy(hGraph);
    cuGraphClone(phGraphClone, originalGraph) => graph::clone(phGraphClone, originalGraph);
    cuGraphAddEmptyNode(phGraphNode, hGraph, dependencies, numDependencies) => graph::add_empty(phGraphNode, hGraph, dependencies, numDependencies);
    cuGraphAddKernelNode(phGraphNode, hGraph, dependencies, numDependencies, nodeParams) => graph::add_kernel(phGraphNode, hGraph, dependencies, numDependencies, nodeParams);
    cuGraphAddKernelNode_v2(phGraphNode, hGraph, dependencies, numDependencies, nodeParams) => graph::add_kernel(phGraphNode, hGraph, dependencies, numDependencies, nodeParams);
    cuGraphAddMemsetNode(phGraphNode, hGraph, dependencies, numDependencies, memsetParams, ctx) => graph::add_memset(phGraphNode, hGraph, dependencies, numDependencies, memsetParams, ctx);
    cuGraphAddMemcpyNode(phGraphNode, hGraph, dependencies, numDependencies, copyParams, ctx) => graph::add_memcpy(phGraphNode, hGraph, dependencies, numDependencies, copyParams, ctx);
    cuGraphAddDependencies(hGraph, from, to, numDependencies) => graph::add_dependencies(hGraph, from, to, numDependencies);
    cuGraphGetNodes(hGraph, nodes, numNodes) => graph::get_nodes(hGraph, nodes, numNodes);
    cuGraphGetRootNodes(hGraph, rootNodes, numRootNodes) => graph::get_root_nodes(hGraph, rootNodes, numRootNodes);
    cuGraphGetEdges(hGraph, from, to, numEdges) => graph::get_edges(hGraph, from, to, numEdges);
    cuGraphNodeGetDependencies(hNode, dependencies, numDependencies) => graph::node_get_dependencies(hNode, dependencies, numDependencies);
    cuGraphNodeGetType(hNode, type_) => graph::node_get_type(hNode, type_);
    cuGraphDestroyNode(hNode) => graph::destroy_node(hNode);
    cuGraphKernelNodeGetParams(hNode, nodeParams) => graph::kernel_get_params(hNode, nodeParams);
    cuGraphKernelNodeGetParams_v2(hNode, nodeParams) => graph::kernel_get_params(hNode, nodeParams);
    cuGraphKernelNodeSetParams(hNode, nodeParams) => graph::kernel_set_params(hNode, nodeParams);
    cuGraphKernelNodeSetParams_v2(hNode, nodeParams) => graph::kernel_set_params(hNode, nodeParams);
    cuGraphDebugDotPrint(hGraph, path, flags) => graph::debug_dot_print(hGraph, path, flags);
    cuGraphAddHostNode(phGraphNode, hGraph, dependencies, numDependencies, nodeParams) => graph_nodes::add_host(phGraphNode, hGraph, dependencies, numDependencies, nodeParams);
    cuGraphHostNodeGetParams(hNode, nodeParams) => graph_nodes::host_get_params(hNode, nodeParams);
    cuGraphHostNodeSetParams(hNode, nodeParams) => graph_nodes::host_set_params(hNode, nodeParams);
    cuGraphAddEventRecordNode(phGraphNode, hGraph, dependencies, numDependencies, event) => graph_nodes::add_event_record(phGraphNode, hGraph, dependencies, numDependencies, event);
    cuGraphAddEventWaitNode(phGraphNode, hGraph, dependencies, numDependencies, event) => graph_nodes::add_event_wait(phGraphNode, hGraph, dependencies, numDependencies, event);
    cuGraphEventRecordNodeGetEvent(hNode, event_out) => graph_nodes::event_record_get(hNode, event_out);
    cuGraphEventRecordNodeSetEvent(hNode, event) => graph_nodes::event_record_set(hNode, event);
    cuGraphEventWaitNodeGetEvent(hNode, event_out) => graph_nodes::event_wait_get(hNode, event_out);
    cuGraphEventWaitNodeSetEvent(hNode, event) => graph_nodes::event_wait_set(hNode, event);
    cuGraphAddChildGraphNode(phGraphNode, hGraph, dependencies, numDependencies, childGraph) => graph_nodes::add_child(phGraphNode, hGraph, dependencies, numDependencies, childGraph);
    cuGraphChildGraphNodeGetGraph(hNode, phGraph) => graph_nodes::child_get_graph(hNode, phGraph);
    cuGraphAddMemAllocNode(phGraphNode, hGraph, dependencies, numDependencies, nodeParams) => graph_nodes::add_mem_alloc(phGraphNode, hGraph, dependencies, numDependencies, nodeParams);
    cuGraphMemAllocNodeGetParams(hNode, params_out) => graph_nodes::mem_alloc_get_params(hNode, params_out);
    cuGraphAddMemFreeNode(phGraphNode, hGraph, dependencies, numDependencies, dptr) => graph_nodes::add_mem_free(phGraphNode, hGraph, dependencies, numDependencies, dptr);
    cuGraphMemFreeNodeGetParams(hNode, dptr_out) => graph_nodes::mem_free_get_params(hNode, dptr_out);

    // Executable graphs: a launch is one batch of queued calls.
    cuGraphInstantiate(phGraphExec, hGraph, phErrorNode, logBuffer, bufferSize) => graph_exec::instantiate_with_log(phGraphExec, hGraph, phErrorNode, logBuffer, bufferSize);
    cuGraphInstantiate_v2(phGraphExec, hGraph, phErrorNode, logBuffer, bufferSize) => graph_exec::instantiate_with_log(phGraphExec, hGraph, phErrorNode, logBuffer, bufferSize);
    cuGraphInstantiateWithFlags(phGraphExec, hGraph, flags) => graph_exec::instantiate_with_flags(phGraphExec, hGraph, flags);
    cuGraphInstantiateWithParams(phGraphExec, hGraph, instantiateParams) => graph_exec::instantiate_with_params(phGraphExec, hGraph, instantiateParams);
    cuGraphInstantiateWithParams_ptsz(phGraphExec, hGraph, instantiateParams) => graph_exec::instantiate_with_params(phGraphExec, hGraph, instantiateParams);
    cuGraphLaunch(hGraphExec, hStream) => graph_exec::launch(hGraphExec, hStream);
    cuGraphLaunch_ptsz(hGraphExec, hStream) => graph_exec::launch(hGraphExec, hStream);
    cuGraphUpload(hGraphExec, hStream) => graph_exec::upload(hGraphExec, hStream);
    cuGraphUpload_ptsz(hGraphExec, hStream) => graph_exec::upload(hGraphExec, hStream);
    cuGraphExecDestroy(hGraphExec) => graph_exec::destroy(hGraphExec);
    cuGraphExecKernelNodeSetParams(hGraphExec, hNode, nodeParams) => graph_exec::kernel_node_set_params(hGraphExec, hNode, nodeParams);
    cuGraphExecKernelNodeSetParams_v2(hGraphExec, hNode, nodeParams) => graph_exec::kernel_node_set_params(hGraphExec, hNode, nodeParams);
    cuGraphExecHostNodeSetParams(hGraphExec, hNode, nodeParams) => graph_exec::host_node_set_params(hGraphExec, hNode, nodeParams);
    cuGraphExecChildGraphNodeSetParams(hGraphExec, hNode, childGraph) => graph_exec::child_node_set_params(hGraphExec, hNode, childGraph);
    cuGraphExecEventRecordNodeSetEvent(hGraphExec, hNode, event) => graph_exec::event_record_node_set_event(hGraphExec, hNode, event);
    cuGraphExecEventWaitNodeSetEvent(hGraphExec, hNode, event) => graph_exec::event_wait_node_set_event(hGraphExec, hNode, event);

    // Memory pools and stream-ordered allocation.
    cuDeviceGetDefaultMemPool(pool_out, dev) => mempool::device_default(pool_out, dev);
    cuDeviceGetMemPool(pool, dev) => mempool::device_get(pool, dev);
    cuDeviceSetMemPool(dev, pool) => mempool::device_set(dev, pool);
    cuMemPoolCreate(pool, poolProps) => mempool::create(pool, poolProps);
    cuMemPoolDestroy(pool) => mempool::destroy(pool);
    cuMemPoolTrimTo(pool, minBytesToKeep) => mempool::trim_to(pool, minBytesToKeep);
    cuMemPoolGetAttribute(pool, attr, value) => mempool::get_attribute(pool, attr, value);
    cuMemPoolSetAttribute(pool, attr, value) => mempool::set_attribute(pool, attr, value);
    cuMemAllocAsync(dptr, bytesize, hStream) => mempool::alloc_async(dptr, bytesize, hStream);
    cuMemAllocAsync_ptsz(dptr, bytesize, hStream) => mempool::alloc_async(dptr, bytesize, hStream);
    cuMemAllocFromPoolAsync(dptr, bytesize, pool, hStream) => mempool::alloc_from_pool(dptr, bytesize, pool, hStream);
    cuMemAllocFromPoolAsync_ptsz(dptr, bytesize, pool, hStream) => mempool::alloc_from_pool(dptr, bytesize, pool, hStream);
    cuMemFreeAsync(dptr, hStream) => mempool::free_async(dptr, hStream);
    cuMemFreeAsync_ptsz(dptr, hStream) => mempool::free_async(dptr, hStream);
}

crate::generated::driver_functions!(implement_driver);

#[cfg(test)]
mod tests {
    use std::ptr;

    use super::*;

    // These calls are refused or answered before any round trip, so they need no server.

    #[test]
    fn null_out_pointers_are_refused_in_the_conversion_layer() {
        // SAFETY: every pointer is NULL or a local; NULL out-pointers are checked first.
        unsafe {
            assert_eq!(Shim::cuCtxGetCurrent(ptr::null_mut()), 1);
            assert_eq!(Shim::cuDriverGetVersion(ptr::null_mut()), 1);
            assert_eq!(Shim::cuModuleGetLoadingMode(ptr::null_mut()), 1);
            assert_eq!(Shim::cuStreamGetFlags(ptr::null_mut(), ptr::null_mut()), 1);
            assert_eq!(Shim::cuMemAlloc_v2(ptr::null_mut(), 16), 1);
            assert_eq!(Shim::cuGetErrorName(0, ptr::null_mut()), 1);
        }
    }

    #[test]
    fn optional_out_pointers_and_handles() {
        // SAFETY: as above.
        unsafe {
            let mut greatest = 0;
            let r = Shim::cuCtxGetStreamPriorityRange(ptr::null_mut(), &mut greatest);
            assert_eq!((r, greatest), (0, -5));
            let mut ctx = 0x1234 as CUcontext;
            assert_eq!(Shim::cuCtxGetCurrent(&mut ctx), 0);
            assert!(ctx.is_null());
            let mut mode = 0;
            assert_eq!(Shim::cuModuleGetLoadingMode(&mut mode), 0);
            assert_eq!(mode, 2);
            // Ignored arguments are not looked at; the missing context is what fails.
            assert_eq!(Shim::cuCtxSetCacheConfig(7), 201);
            let mut s = ptr::null();
            assert_eq!(Shim::cuGetErrorName(1, &mut s), 0);
            assert_eq!(std::ffi::CStr::from_ptr(s), c"CUDA_ERROR_INVALID_VALUE");
        }
    }

    #[test]
    fn proc_address_status_may_be_null() {
        let mut pfn = ptr::null_mut();
        let (mut status, name) = (9, c"cuInit");
        // SAFETY: locals and a C string literal.
        unsafe {
            let r = Shim::cuGetProcAddress_v2(name.as_ptr(), &mut pfn, 12000, 0, ptr::null_mut());
            assert_eq!(r, 0);
            assert!(!pfn.is_null());
            let r = Shim::cuGetProcAddress_v2(name.as_ptr(), &mut pfn, 12000, 0, &mut status);
            assert_eq!((r, status), (0, 0));
        }
    }
}
