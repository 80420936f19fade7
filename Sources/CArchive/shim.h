#ifndef SNAPIMPORT_CARCHIVE_SHIM_H
#define SNAPIMPORT_CARCHIVE_SHIM_H
// libarchive (Debian libarchive-dev): tar/OVA and zip containers, gzip/xz/zstd/bzip2 streams.
#include <archive.h>
#include <archive_entry.h>

// AE_IFREG is a cast macro Swift does not import.
static inline int snapimport_archive_entry_is_regular(struct archive_entry *entry) {
    return archive_entry_filetype(entry) == AE_IFREG;
}
#endif
