#ifndef SNAPIMPORT_CARCHIVE_SHIM_H
#define SNAPIMPORT_CARCHIVE_SHIM_H
// libarchive (Debian libarchive-dev): tar/OVA and zip containers, gzip/xz/zstd/bzip2 streams.
#include <archive.h>
#include <archive_entry.h>
#endif
