/* libFuzzer target for the manager server's request path, without sockets
 * (ipc/manager/manager_core.h from the static library): incremental framing,
 * codec sniffing, decoding, request parsing, dispatch to every shipped
 * type, parked calls, timers, connections that go away, shutdown.
 *
 * The input is a script of operations, each starting with one byte:
 *   bits 0-1  which of four connections (0-2 start authenticated, 3 must
 *             pass the authkey challenge)
 *   bits 2-3  0, 1: feed the next N bytes (N: one more byte, or two when
 *             bit 4 is set) to that connection, as the socket would;
 *             2: the oldest running timer fires;
 *             3: the connection goes away (a fresh one takes its place)
 * Connections the core closes are replaced the same way. At the end the
 * manager stops (answering parked calls) and everything is freed.
 * Checks: every frame sent has a length header matching its size; no
 * crash, no leak (ASan), no send to a session after it was freed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mpx.h>

#include "../../ipc/manager/manager_core.h"

#define N_SESS 4
#define MAX_TIMERS 64

typedef struct {
  mpx__msess_t *s;
  int closed; /* the core asked to close it */
  int live;
} fio_t;

static fio_t io[N_SESS];
static mpx__mcall_t *timers[MAX_TIMERS];
static size_t n_timers;
static int timer_marker;

static void h_send(void *p, const void *data, size_t len) {
  fio_t *f = p;
  const uint8_t *b = data;
  if (!f->live || len < 4) __builtin_trap();
  int32_t n = (int32_t)((uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
                        (uint32_t)b[2] << 8 | b[3]);
  if (n >= 0 ? (size_t)n != len - 4 : (n != -1 || len < 12)) __builtin_trap();
}

static void h_close(void *p) { ((fio_t *)p)->closed = 1; }

static void h_pause(void *p, bool paused) {
  (void)p;
  (void)paused;
}

static int h_timer_start(void *user, mpx__mcall_t *c, double secs) {
  (void)user;
  (void)secs;
  if (n_timers == MAX_TIMERS) return MPX_ENOMEM; /* the core copes */
  timers[n_timers++] = c;
  c->timer = &timer_marker;
  return 0;
}

static void h_timer_stop(void *user, mpx__mcall_t *c) {
  (void)user;
  for (size_t i = 0; i < n_timers; i++)
    if (timers[i] == c) {
      memmove(&timers[i], &timers[i + 1], (n_timers - i - 1) * sizeof *timers);
      n_timers--;
      c->timer = NULL;
      return;
    }
  __builtin_trap(); /* a timer the core never started */
}

static int shutdown_asked;
static void h_shutdown(void *user) {
  (void)user;
  shutdown_asked = 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  setenv("MPX_PLUGIN_PATH", FUZZ_PLUGIN_DIR, 0);
  mpx_log_set_level(MPX_LOG_OFF);
  return 0;
}

static void sess_open(mpx__mcore_t *k, int i) {
  io[i].closed = 0;
  io[i].live = 1;
  io[i].s = mpx__msess_new(k, &io[i], i != 3);
  if (io[i].s == NULL) io[i].live = 0;
}

static void sess_gone(int i) {
  if (!io[i].live) return;
  mpx__msess_free(io[i].s);
  io[i].live = 0;
  io[i].s = NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char key[] = "fuzz";
  mpx__mcore_opts_t o = {key, 4, 0, 1 << 20, 1000};
  mpx__mcore_hooks_t h = {h_send, h_close, h_pause, h_timer_start,
                          h_timer_stop, h_shutdown, NULL};
  mpx__mcore_t *k;
  if (mpx__mcore_new(&k, &o, &h) != 0) return 0;
  if (mpx__mcore_set_address(k, "tcp://127.0.0.1:50000") != 0 ||
      mpx__mcore_expose(k, "get_queue", "Queue", NULL, NULL) != 0)
    __builtin_trap();
  n_timers = 0;
  shutdown_asked = 0;
  for (int i = 0; i < N_SESS; i++) sess_open(k, i);
  size_t off = 0;
  while (off < size) {
    uint8_t op = data[off++];
    int i = op & 3, kind = (op >> 2) & 3;
    if (kind <= 1) {
      size_t n = 0;
      if (op & 0x10) {
        if (off + 2 > size) break;
        n = (size_t)data[off] | (size_t)data[off + 1] << 8;
        off += 2;
      } else {
        if (off + 1 > size) break;
        n = data[off++];
      }
      if (n > size - off) n = size - off;
      if (io[i].live && !io[i].closed) mpx__msess_feed(io[i].s, data + off, n);
      off += n;
    } else if (kind == 2) {
      if (n_timers > 0) mpx__mcore_expire(k, timers[0]);
    } else {
      sess_gone(i);
      sess_open(k, i);
    }
    for (int j = 0; j < N_SESS; j++)
      if (io[j].live && io[j].closed) {
        sess_gone(j);
        sess_open(k, j);
      }
  }
  mpx__mcore_stop(k);
  for (int i = 0; i < N_SESS; i++) sess_gone(i);
  if (n_timers != 0) __builtin_trap(); /* every parked call is gone */
  mpx_manager_stats_t st;
  mpx__mcore_stats(k, &st);
  if (st.open_connections != 0) __builtin_trap();
  mpx__mcore_free(k);
  return 0;
}
