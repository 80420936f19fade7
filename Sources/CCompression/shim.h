#ifndef SNAPIMPORT_CCOMPRESSION_SHIM_H
#define SNAPIMPORT_CCOMPRESSION_SHIM_H
#include <zstd.h>
#include <zlib.h>
#if defined(__linux__) && defined(__GLIBC__)
#include <malloc.h>  // mallopt, for DiskImage.tuneAllocatorForLargeExtents()
#endif
#endif
