"""numba-cuda's cooperative groups on an emulated GPU: a kernel using cuda.cg.this_grid()
links libcudadevrt (Remora's linker puts its PTX device runtime in its place), is launched
cooperatively, and every block sees every other block's writes across grid syncs in a loop;
max_cooperative_grid_blocks agrees with the grid a cooperative launch accepts, and one block
more is refused (by cuda-core, from the same occupancy the driver enforces)."""
import warnings

import numpy as np

with warnings.catch_warnings():
    # cuda-core warns (RuntimeWarning) when it must fall back to the driver's cuLink*.
    warnings.simplefilter("error", RuntimeWarning)
    from numba import cuda, int32, void
    from numba.cuda.types.ext_types import grid_group

    sig = void(int32[::1], int32[::1], int32)

    @cuda.jit(sig)
    def rotate(buf, out, rounds):
        g = cuda.cg.this_grid()
        i = cuda.grid(1)
        n = cuda.gridsize(1)
        v = i
        for _ in range(rounds):
            buf[i] = v
            g.sync()
            v = buf[(i + cuda.blockDim.x + 1) % n] + 1
            g.sync()
        out[i] = v

    # numba's test_grid_group_type: this_grid() is a GridGroup, and it marks the kernel
    # cooperative.
    @cuda.jit
    def group_type(x):
        g = cuda.cg.this_grid()  # noqa: F841
        x[0] = 1

    def expect(blocks, block, rounds):
        n = blocks * block
        want = np.arange(n, dtype=np.int32)
        for _ in range(rounds):
            want = want[(np.arange(n) + block + 1) % n] + 1
        return want

    overload = rotate.overloads[sig.args]
    assert overload.cooperative
    block = 128
    max_blocks = overload.max_cooperative_grid_blocks(block)
    sms = cuda.get_current_device().MULTIPROCESSOR_COUNT
    assert max_blocks == 16 * sms, (max_blocks, sms)
    assert "cudaCGSynchronize" in rotate.inspect_asm(sig.args)

    for blocks, rounds in ((max_blocks, 2), (7, 5)):
        n = blocks * block
        buf = cuda.device_array(n, dtype=np.int32)
        out = cuda.device_array(n, dtype=np.int32)
        rotate[blocks, block](buf, out, rounds)
        np.testing.assert_array_equal(out.copy_to_host(), expect(blocks, block, rounds))

    try:
        n = (max_blocks + 1) * block
        rotate[max_blocks + 1, block](cuda.device_array(n, np.int32), cuda.device_array(n, np.int32), 1)
        cuda.synchronize()
        raise AssertionError("a cooperative grid larger than the device was launched")
    except AssertionError:
        raise
    except Exception as e:
        # cuda-core checks first, from the same occupancy query (ValueError naming the
        # limit); otherwise the driver refuses the launch (720).
        msg = str(e)
        assert f"limit ({max_blocks})" in msg or "COOPERATIVE_LAUNCH_TOO_LARGE" in msg, repr(e)

    x = cuda.to_device(np.zeros(1, dtype=np.int32))
    group_type[1, 1](x)
    assert x.copy_to_host()[0] == 1
    assert next(iter(group_type.overloads.values())).cooperative
    assert grid_group is not None
print("numba cooperative passed")
