/* mpx: Python's multiprocessing, rebuilt in C. The umbrella header. */
#ifndef MPX_H
#define MPX_H

#include "mpx/common.h"
#include "mpx/error.h"
#include "mpx/log.h"
#include "mpx/process.h"
#include "mpx/shm.h"
#include "mpx/sync.h"
#include "mpx/obj.h"
#include "mpx/codec.h"
#include "mpx/plugin.h"
#include "mpx/conn.h"
#include "mpx/listener.h"
#include "mpx/transport.h"
#include "mpx/queue.h"
#include "mpx/pool.h"
#include "mpx/pipeline.h"
#include "mpx/manager.h"

#endif /* MPX_H */
