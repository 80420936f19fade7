#ifndef SNAPIMPORT_CCOMPRESSION_SHIM_H
#define SNAPIMPORT_CCOMPRESSION_SHIM_H
#include <zstd.h>
#include <zlib.h>
#endif
