/* The registry of named shm objects: (pid, name) entries in a memfd
 * segment, so a supervisor can unlink what a dead child created.
 *
 * Crash safety: a process may die (SIGKILL) anywhere, even holding the
 * lock. An entry changes state only by one release store after its pid
 * and name are complete, so every entry is either free or a whole record.
 * A create holds the lock from before shm_open until its entry is USED,
 * with the entry PENDING meanwhile; a PENDING entry found after its
 * holder died may name an object it created, so it becomes USED and a
 * reap unlinks it if it exists. `high` bounds the scans: it is raised
 * before an entry is filled and lowered only past free entries. */
#include <stdatomic.h>
#include <string.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "named_internal.h"

#define REG_MAGIC 0x313067657278706dULL /* "mpxreg01" */
#define REG_NAME 256
#define REG_DEFAULT_CAPACITY 1024

enum { ENTRY_FREE = 0, ENTRY_USED = 1, ENTRY_PENDING = 2 };

typedef struct {
  int32_t pid;
  char name[REG_NAME]; /* without the leading '/' */
  _Atomic uint32_t state;
} reg_entry_t;

typedef struct {
  uint64_t magic;
  uint64_t capacity;
  uint64_t entry_size;
  _Atomic uint64_t high; /* entries at and past it are free */
  mpx_lock_t lock;
} reg_header_t;

struct mpx_shm_registry_s {
  mpx_segment_t *seg;
  reg_header_t *h;
  reg_entry_t *e;
};

static _Atomic(mpx_shm_registry_t *) installed;

static size_t entries_offset(void) {
  return (sizeof(reg_header_t) + 63) & ~(size_t)63;
}

static int wrap(mpx_shm_registry_t **out, mpx_segment_t *seg) {
  mpx_shm_registry_t *r = calloc(1, sizeof *r);
  if (r == NULL) return mpx__err(MPX_ENOMEM, "shm registry");
  r->seg = seg;
  r->h = mpx_segment_base(seg);
  r->e = (reg_entry_t *)((char *)r->h + entries_offset());
  *out = r;
  return 0;
}

int mpx_shm_registry_new(mpx_shm_registry_t **out, size_t capacity) {
  mpx_segment_opts_t o;
  mpx_segment_t *seg;
  reg_header_t *h;
  int rc;

  if (out == NULL) return mpx__err(MPX_EINVAL, "shm registry: NULL out");
  if (capacity == 0) capacity = REG_DEFAULT_CAPACITY;
  if (capacity > INT32_MAX)
    return mpx__err(MPX_EINVAL, "shm registry: capacity %zu", capacity);
  memset(&o, 0, sizeof o);
  o.size = entries_offset() + capacity * sizeof(reg_entry_t);
  o.name = "mpx-shm-registry";
  if ((rc = mpx_segment_new(&seg, &o)) != 0) return rc;
  h = mpx_segment_base(seg);
  h->capacity = capacity;
  h->entry_size = sizeof(reg_entry_t);
  atomic_init(&h->high, 0);
  if ((rc = mpx_lock_init(&h->lock)) != 0) {
    mpx_segment_free(seg);
    return mpx__err(rc, "shm registry: lock init");
  }
  h->magic = REG_MAGIC;
  if ((rc = wrap(out, seg)) != 0) mpx_segment_free(seg);
  return rc;
}

int mpx_shm_registry_attach(mpx_shm_registry_t **out, int fd) {
  mpx_segment_t *seg;
  reg_header_t *h;
  size_t size;
  int rc;

  if (out == NULL) return mpx__err(MPX_EINVAL, "shm registry: NULL out");
  if ((rc = mpx_segment_attach(&seg, fd, 0)) != 0) return rc;
  h = mpx_segment_base(seg);
  size = mpx_segment_size(seg);
  if (size < entries_offset() || h->magic != REG_MAGIC ||
      h->entry_size != sizeof(reg_entry_t) ||
      h->capacity > (size - entries_offset()) / sizeof(reg_entry_t)) {
    mpx_segment_free(seg);
    return mpx__err(MPX_EINVAL, "shm registry: fd %d is not a registry", fd);
  }
  if ((rc = wrap(out, seg)) != 0) mpx_segment_free(seg);
  return rc;
}

int mpx_shm_registry_fd(const mpx_shm_registry_t *r) {
  return mpx_segment_fd(r->seg);
}

void mpx_shm_registry_install(mpx_shm_registry_t *r) {
  atomic_store(&installed, r);
}

void mpx_shm_registry_free(mpx_shm_registry_t *r) {
  mpx_shm_registry_t *expect = r;
  if (r == NULL) return;
  /* Never leave a dangling pointer installed. */
  atomic_compare_exchange_strong(&installed, &expect, NULL);
  mpx_segment_free(r->seg);
  free(r);
}

static uint64_t high(mpx_shm_registry_t *r) {
  uint64_t n = atomic_load(&r->h->high);
  return n < r->h->capacity ? n : r->h->capacity;
}

static int used(reg_entry_t *e) {
  return atomic_load_explicit(&e->state, memory_order_acquire) == ENTRY_USED;
}

static void set_state(reg_entry_t *e, uint32_t state) {
  atomic_store_explicit(&e->state, state, memory_order_release);
}

static int lock(mpx_shm_registry_t *r) {
  int rc = mpx_lock_acquire(&r->h->lock, -1);
  if (rc == MPX_EOWNERDEAD) {
    /* The holder died: entries are whole (see the top comment); its
     * PENDING one may name an object it created. */
    size_t i;
    for (i = 0; i < high(r); i++)
      if (atomic_load(&r->e[i].state) == ENTRY_PENDING)
        set_state(&r->e[i], ENTRY_USED);
    rc = mpx_lock_consistent(&r->h->lock);
    if (rc != 0) mpx_lock_release(&r->h->lock);
  }
  return rc ? mpx__err(rc, "shm registry: lock") : 0;
}

static void unlock(mpx_shm_registry_t *r) { mpx_lock_release(&r->h->lock); }

static void drop(mpx_shm_registry_t *r, reg_entry_t *e) {
  uint64_t n;
  set_state(e, ENTRY_FREE);
  for (n = high(r); n > 0 && atomic_load(&r->e[n - 1].state) == ENTRY_FREE;
       n--) {
  }
  atomic_store(&r->h->high, n);
}

int mpx__shm_registry_begin(const char *name, mpx__shm_pending_t *p) {
  mpx_shm_registry_t *r = atomic_load(&installed);
  size_t i, n = strlen(name);
  int rc;

  p->r = NULL;
  if (r == NULL) return 0;
  if (n >= REG_NAME)
    return mpx__err(MPX_ENAMETOOLONG, "shm registry: name '%s'", name);
  if ((rc = lock(r)) != 0) return rc;
  for (i = 0; i < r->h->capacity &&
              atomic_load(&r->e[i].state) != ENTRY_FREE; i++) {
  }
  if (i == r->h->capacity) {
    unlock(r);
    return mpx__err(MPX_ENOSPC, "shm registry: all %zu entries in use "
                                "(creating '%s')", i, name);
  }
  if (i >= atomic_load(&r->h->high)) atomic_store(&r->h->high, i + 1);
  r->e[i].pid = (int32_t)getpid();
  memcpy(r->e[i].name, name, n + 1);
  set_state(&r->e[i], ENTRY_PENDING);
  p->r = r;
  p->slot = i;
  return 0;
}

void mpx__shm_registry_end(mpx__shm_pending_t *p, int created) {
  if (p->r == NULL) return;
  if (created)
    set_state(&p->r->e[p->slot], ENTRY_USED);
  else
    drop(p->r, &p->r->e[p->slot]);
  unlock(p->r);
  p->r = NULL;
}

int mpx__shm_registry_unlink(const char *path) {
  mpx_shm_registry_t *r = atomic_load(&installed);
  /* Under the lock, so no tracked create of the same name can slip in
   * between the unlink and the entry's removal. */
  int locked = r != NULL && lock(r) == 0;
  int rc = shm_unlink(path) == 0 ? 0 : -errno;
  size_t i;

  if (!locked) return rc;
  /* Even when the name is already gone, its entry is stale. */
  if (rc == 0 || rc == MPX_ENOENT)
    for (i = 0; i < high(r); i++)
      if (used(&r->e[i]) && strncmp(r->e[i].name, path + 1, REG_NAME) == 0)
        drop(r, &r->e[i]);
  unlock(r);
  return rc;
}

int mpx_shm_registry_reap(mpx_shm_registry_t *r, pid_t pid) {
  char path[REG_NAME + 1];
  size_t i;
  int rc, n = 0;

  if ((rc = lock(r)) != 0) return rc;
  for (i = 0; i < high(r); i++) {
    reg_entry_t *e = &r->e[i];
    if (!used(e) || (pid != 0 && e->pid != pid)) continue;
    path[0] = '/';
    memcpy(path + 1, e->name, REG_NAME);
    path[REG_NAME] = '\0';
    if (shm_unlink(path) == 0)
      n++;
    else if (errno != ENOENT)
      MPX__WARN("shm registry: shm_unlink('%s') of pid %d: %s", path + 1,
                (int)e->pid, strerror(errno));
    /* Dropped whatever happened: retrying would fail the same way. */
    drop(r, e);
  }
  unlock(r);
  return n;
}

int mpx_shm_registry_count(mpx_shm_registry_t *r, pid_t pid) {
  size_t i;
  int rc, n = 0;
  if ((rc = lock(r)) != 0) return rc;
  for (i = 0; i < high(r); i++)
    if (used(&r->e[i]) && (pid == 0 || r->e[i].pid == pid)) n++;
  unlock(r);
  return n;
}
