/* Internal: what the pool coordinator and its workers say to each other.
 *
 * Every message is one transport frame, host byte order (both ends run on
 * one machine). Coordinator -> worker:
 *   DEFINE  pm_define_t + NUL-terminated string: function fn_id is the raw
 *           pointer `addr` (fork), or `addr` bytes into the object named
 *           by the string (forkserver), or the "lib.so:symbol" string.
 *           Defines go out on a link in fn_id order before the first task
 *           that uses them.
 *   TASK    pm_task_t + n items, each a uint32 length and the bytes.
 *   QUIT    pm_hdr_t: finish and exit 0.
 * Worker -> coordinator:
 *   READY   pm_ready_t, once, after the initializer succeeded.
 *   ANSWER  pm_answer_t + n results, each pm_item_t and its bytes (the
 *           result, or the failure's message when rc != 0). A job's
 *           results travel in one frame: they arrive all or none.
 *
 * Worker arguments (the process args): pm_wargs_t, then the initializer's
 * object path or spec (NUL-terminated), then initargs. */
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
  uint32_t len;
} pm_item_t;

#define PM_WARGS_VERSION 1u

typedef struct {
  uint32_t version;
  uint32_t index, nworkers;
  int32_t link_fd, stderr_fd;
  int32_t transport;
  uint8_t init_kind; /* PM_FN_* */
  uint8_t pad[7];
  uint64_t init_addr;
  uint32_t init_str_len; /* bytes of the string after the struct, NUL included */
  uint32_t initargs_len;
  char name[32];
} pm_wargs_t;

#endif
