/* Internal: what the pool coordinator and its workers say to each other.
 *
 * Every message is one transport frame, host byte order (both ends run on
 * one machine). Coordinator -> worker:
 *   DEFINE  pm_define_t + NUL-terminated string: function fn_id is the raw
 *           pointer `addr` (fork), or `addr` bytes into the object named
 *           by the string (forkserver), or the "lib.so:symbol" string.
 *           Defines go out on a link in fn_id order before the first task
 *           that uses them.
 *   TASK    pm_task_t + n items, each a uint32 length word and the bytes.
 *   QUIT    pm_hdr_t: finish and exit 0.
 * Worker -> coordinator:
 *   READY   pm_ready_t, once, after the initializer succeeded.
 *   ANSWER  pm_answer_t + n results, each pm_item_t and its bytes (the
 *           result, or the failure's message when rc != 0). A job's
 *           results travel in one frame: they arrive all or none.
 *
 * Items and the arena. An item's length word (the uint32 before a TASK
 * item, the `len` of an ANSWER's pm_item_t) is the number of bytes that
 * follow in the frame, in its low 31 bits (PM_ITEM_LEN): an inline item is
 * below 2 GiB. Bit 31 (PM_ITEM_REF) set: the item is not in the frame but
 * in the pool's arena, and what follows is a pm_ref_t (the low bits say
 * sizeof(pm_ref_t)) naming `len` bytes at the start of arena block `ref`.
 * Items of more than MPX_POOL_ARENA_THRESHOLD bytes travel that way when
 * the pool has an arena with room; otherwise inline.
 *  - TASK references are lent: the coordinator allocated the block (it is
 *    owned by the coordinator's pid), copied the argument into it once,
 *    and frees it when the job ends, answered or not (a worker that dies
 *    leaves nothing to free). The worker only reads the block, in place,
 *    during the task.
 *  - ANSWER references are handed over: the worker allocated the block
 *    (owned by the worker's pid) and wrote the result into it; the
 *    coordinator checks that the block is live and owned by that worker,
 *    takes it (mpx_arena_give to its own pid) on receipt, and frees it
 *    once the result is delivered (copied into a map's results) or, for
 *    apply_async and imap, which hand the block's memory to the caller,
 *    when the caller is done with it. A worker that dies with blocks of its own (a result
 *    being written, an answer not yet read) has them freed by
 *    mpx_arena_reclaim(pid) in the coordinator's exit path, after its
 *    link is closed, so an answer naming a reclaimed block is never read.
 *
 * Worker arguments (the process args): pm_wargs_t, then the initializer's
 * object path or spec (NUL-terminated), then initargs. The arena reaches
 * the worker by inheritance under fork (arena_addr: the coordinator's
 * mpx_arena_t handle, valid in the child) or as the descriptor of its
 * segment (arena_fd, passed at the same number under forkserver and
 * spawn; the worker attaches it). Neither: the pool has no arena. */
#ifndef MPX_CORE_POOL_PROTO_H
#define MPX_CORE_POOL_PROTO_H

#include <stdint.h>

enum {
  PM_DEFINE = 'D',
  PM_TASK = 'T',
  PM_QUIT = 'Q',
  PM_READY = 'R',
  PM_ANSWER = 'A'
};

enum { PM_FN_PTR = 0, PM_FN_LOC = 1, PM_FN_SPEC = 2, PM_FN_NONE = 3 };

typedef struct {
  uint8_t type;
  uint8_t pad[7];
} pm_hdr_t;

typedef struct {
  uint8_t type, kind;
  uint16_t pad;
  uint32_t fn_id;
  uint64_t addr;
} pm_define_t;

typedef struct {
  uint8_t type;
  uint8_t pad[3];
  uint32_t fn_id;
  uint64_t job;
  uint32_t n;
  uint32_t pad2;
} pm_task_t;

typedef struct {
  uint8_t type;
  uint8_t pad[3];
  uint32_t index;
  int32_t pid;
  uint32_t pad2;
} pm_ready_t;

typedef struct {
  uint8_t type;
  uint8_t pad[3];
  uint32_t n;
  uint64_t job;
} pm_answer_t;

typedef struct {
  int32_t rc;
  uint32_t len; /* length word: PM_ITEM_REF | PM_ITEM_LEN */
} pm_item_t;

#define PM_ITEM_REF 0x80000000u
#define PM_ITEM_LEN 0x7fffffffu

/* An item in the arena (after a length word with PM_ITEM_REF). */
typedef struct {
  uint64_t ref; /* mpx_ref_t of the block */
  uint64_t len; /* the item's bytes, at the start of the block */
} pm_ref_t;

#define PM_WARGS_VERSION 2u

typedef struct {
  uint32_t version;
  uint32_t index, nworkers;
  int32_t link_fd, stderr_fd;
  int32_t transport;
  int32_t arena_fd;    /* forkserver, spawn: the arena's segment, or -1 */
  uint8_t init_kind;   /* PM_FN_* */
  uint8_t pad[3];
  uint64_t arena_addr; /* fork: the coordinator's mpx_arena_t *, or 0 */
  uint64_t init_addr;
  uint32_t init_str_len; /* bytes of the string after the struct, NUL included */
  uint32_t initargs_len;
  char name[32];
} pm_wargs_t;

#endif
