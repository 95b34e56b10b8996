#ifndef WAYBACK_CZSTD_SHIM_H
#define WAYBACK_CZSTD_SHIM_H
#include <zstd.h>
#endif
