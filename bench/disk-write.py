#!/usr/bin/env python3
"""bench/disk-write.py BYTES PATH: the disk's speed right now, as a restore uses it.

Writes BYTES to PATH in 1 MiB blocks (random, incompressible), starts the write-back every 8 MiB
(sync_file_range, as `wayback restore` does) and fsyncs at the end. The caller removes PATH
afterwards, outside the measured time.
"""
import ctypes, os, sys

size, path = int(sys.argv[1]), sys.argv[2]
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
block = os.urandom(1 << 20)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
blocks = (size + (1 << 20) - 1) >> 20
for i in range(blocks):
    os.pwrite(fd, block, i << 20)
    if (i + 1) % 8 == 0:
        libc.sync_file_range(fd, (i - 7) << 20, 8 << 20, 2)  # SYNC_FILE_RANGE_WRITE
os.fsync(fd)
os.close(fd)
