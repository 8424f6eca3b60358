/* mpx: Python's multiprocessing, rebuilt in C. The umbrella header. */
#ifndef MPX_H
#define MPX_H

#include "mpx/common.h"
#include "mpx/error.h"
#include "mpx/log.h"
#include "mpx/process.h"

#endif /* MPX_H */
