#ifndef WAYBACK_CCODECS_SHIM_H
#define WAYBACK_CCODECS_SHIM_H
// lz4 (block format; LZ4HC for levels 3 and up) and gzip (zlib's deflate with a gzip header and
// CRC-32), one independent frame per call. zlib's init functions are macros, which Swift cannot
// call, hence these wrappers.
#include <lz4.h>
#include <lz4hc.h>
#include <zlib.h>
#include <string.h>

/// Bytes `n` plain bytes can take compressed in gzip format, at most.
static inline size_t wb_gzip_bound(size_t n) { return compressBound((uLong)n) + 32; }

/// Compresses `src` into one gzip member; returns its length, or -1.
static inline long wb_gzip_compress(const void *src, size_t n, void *dst, size_t cap, int level) {
    z_stream s;
    memset(&s, 0, sizeof s);
    if (deflateInit2(&s, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return -1;
    s.next_in = (Bytef *)src; s.avail_in = (uInt)n;
    s.next_out = (Bytef *)dst; s.avail_out = (uInt)cap;
    int r = deflate(&s, Z_FINISH);
    long out = (long)s.total_out;
    deflateEnd(&s);
    return r == Z_STREAM_END ? out : -1;
}

/// Decompresses one gzip member of exactly `raw` plain bytes (CRC-32 checked); returns the plain
/// length, or -1 when the data is damaged or has another length.
static inline long wb_gzip_decompress(const void *src, size_t n, void *dst, size_t raw) {
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, 15 + 16) != Z_OK) return -1;
    s.next_in = (Bytef *)src; s.avail_in = (uInt)n;
    s.next_out = (Bytef *)dst; s.avail_out = (uInt)raw;
    int r = inflate(&s, Z_FINISH);
    long out = (long)s.total_out;
    int rest = (int)s.avail_in;
    inflateEnd(&s);
    return (r == Z_STREAM_END && rest == 0 && (size_t)out == raw) ? out : -1;
}
#endif
