/* mpx: shared memory. Segments (anonymous, memfd-backed), the arena
 * allocator inside them, shared values and arrays (Python's sharedctypes),
 * and named shared memory (Python's SharedMemory) with a registry that
 * lets a supervisor unlink what its children created.
 *
 * Handles (mpx_segment_t, mpx_arena_t, ...) are process-local and not
 * thread-safe unless a function says so; the memory they describe is
 * shared. Arena calls are thread- and process-safe.
 *
 * Ownership: every *_new / *_create / *_attach gives the caller a handle
 * to end with the matching *_free / *_close; a segment passed to a
 * format/attach call is borrowed and must outlive the handle. Arena
 * blocks are reference-counted: mpx_arena_retain adds a reference,
 * mpx_arena_release drops one (the last frees the block). */
#ifndef MPX_SHM_H
#define MPX_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "common.h"
#include "obj.h"
#include "sync.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Segments --------------------------------------------------------- */

/* A segment is a memfd mapped MAP_SHARED. It has no name in any file
 * system, so nothing is left in /dev/shm whatever way the processes end;
 * the memory is freed when the last mapping and descriptor are gone.
 * Fork children inherit the mapping at the same address; other processes
 * receive the descriptor (mpx_segment_send/recv, or pass_fds) and attach.
 * The size is sealed (F_SEAL_SHRINK | F_SEAL_GROW): no process can shrink
 * the memfd and make the others' accesses die of SIGBUS. */
typedef struct mpx_segment_s mpx_segment_t;

enum {
  /* Touch every page now (MADV_POPULATE_WRITE), so later first touches do
   * not fault: a page fault costs about 14 us on small VMs. */
  MPX_SEGMENT_PREFAULT = 1u << 0,
  /* Back the segment with huge pages: hugetlbfs pages when the system has
   * some reserved (size rounded up to 2 MiB), else transparent huge pages
   * where shmem allows them. mpx_segment_flags() says what was achieved:
   * HUGEPAGES stays set only with hugetlbfs, or when MADV_HUGEPAGE was
   * accepted and the shmem THP policy is not "never" or "deny". */
  MPX_SEGMENT_HUGEPAGES = 1u << 1,
  /* Set by mpx_segment_flags() when hugetlbfs pages back the segment. */
  MPX_SEGMENT_HUGETLB = 1u << 2,
};

typedef struct {
  size_t size;         /* bytes, > 0; rounded up to the page size */
  unsigned flags;      /* MPX_SEGMENT_* */
  const char *name;    /* memfd name shown in /proc/PID/fd; default "mpx" */
} mpx_segment_opts_t;

/* MPX_EINVAL for size 0 or unknown flags, MPX_EOVERFLOW when the size
 * cannot be rounded up; else the failing system call's code, named in
 * mpx_last_error().
 * Own: *out is yours: mpx_segment_free; borrows opts->name for the call. */
MPX_API int mpx_segment_new(mpx_segment_t **out, const mpx_segment_opts_t *opts);
/* Map an existing segment descriptor (e.g. received from another process).
 * The descriptor is duplicated: the caller keeps its own. flags: PREFAULT
 * maps the pages now (the others are ignored: the memfd decides its page
 * size). MPX_EINVAL when fd is not a memfd (a pipe, a file with a path,
 * /dev/shm included) or is empty.
 * Own: *out is yours: mpx_segment_free; copies fd (a dup), fd stays yours. */
MPX_API int mpx_segment_attach(mpx_segment_t **out, int fd, unsigned flags);
/* The mapping in this process, its size, and its descriptor (owned by the
 * segment: dup it to keep it past mpx_segment_free).
 * Own: the mapping and the descriptor are borrowed until
 * mpx_segment_free. */
MPX_API void *mpx_segment_base(const mpx_segment_t *s);
MPX_API size_t mpx_segment_size(const mpx_segment_t *s);
MPX_API int mpx_segment_fd(const mpx_segment_t *s);
/* The MPX_SEGMENT_* options in effect (HUGETLB when hugetlbfs backs it). */
MPX_API unsigned mpx_segment_flags(const mpx_segment_t *s);
/* Fault in [off, off+len) now, for writing; contents are unchanged.
 * MPX_ERANGE when the range does not fit in the segment. */
MPX_API int mpx_segment_prefault(mpx_segment_t *s, size_t off, size_t len);
/* Send the segment's descriptor and size over a Unix socket (SCM_RIGHTS) /
 * receive them and attach. recv: MPX_EPROTO when the message is not a
 * segment or the sizes disagree, MPX_EPIPE when the peer has closed.
 * Own: send borrows s for the call (the receiver gets its own
 * descriptor); recv's *out is yours: mpx_segment_free. */
MPX_API int mpx_segment_send(int sock, const mpx_segment_t *s);
MPX_API int mpx_segment_recv(int sock, mpx_segment_t **out, unsigned flags);
/* Unmap and close. Other processes' mappings are unaffected. */
MPX_API void mpx_segment_free(mpx_segment_t *s);

/* ---- Arena allocator ---------------------------------------------------- */

/* An allocator whose heap lives in a segment, usable by every process that
 * maps it. Blocks are named by references, never pointers: a reference is
 * the block's offset from the arena start (low 32 bits, in 16-byte units:
 * an arena holds at most 64 GiB) and its generation (high 32 bits), so a
 * stale reference to a freed or reused block is caught (MPX_ESTALE)
 * instead of corrupting memory. Generations come from one arena-wide
 * counter (each free and each split takes the next), so a spot never
 * shows the same generation twice until 2^32 more frees; a reference into
 * the middle of a block is checked against whatever bytes lie there, so
 * is caught almost surely. 0 is never a valid
 * reference. Each block carries a size, an owner pid and a refcount.
 *
 * The heap is guarded by a robust process-shared lock: a process killed
 * while holding it does not wedge the others; the next one in rebuilds the
 * free lists from the block headers, which are always left walkable.
 * Blocks of a dead process stay allocated until mpx_arena_reclaim(pid). */
typedef struct mpx_arena_s mpx_arena_t;
typedef uint64_t mpx_ref_t;

typedef struct {
  size_t size;            /* heap bytes; default 64 MiB */
  unsigned segment_flags; /* MPX_SEGMENT_* for the arena's own segment */
} mpx_arena_opts_t;

typedef struct {
  size_t capacity;      /* bytes the heap manages, headers included */
  size_t used;          /* bytes in allocated blocks, headers included */
  size_t free;          /* capacity - used */
  size_t largest_free;  /* the largest block mpx_arena_alloc could return now */
  size_t n_allocated;   /* allocated blocks */
  size_t n_free;        /* free blocks */
  unsigned waiting;     /* mpx_arena_alloc calls waiting for space now (a
                           waiter killed while asleep stays counted: it
                           only costs extra wake-ups) */
  uint64_t recoveries;  /* times a dead lock holder's work was repaired */
} mpx_arena_stats_t;

/* A new arena in a new segment of its own (send mpx_arena_segment() to
 * other processes; fork children inherit it).
 * Own: *out is yours: mpx_arena_free (which also frees its own segment). */
MPX_API int mpx_arena_new(mpx_arena_t **out, const mpx_arena_opts_t *opts);
/* Format a new arena in [offset, offset+size) of an existing segment
 * (size 0: the rest of the segment), or attach to one formatted there
 * before. The segment is borrowed: it must outlive the arena handle.
 * offset: 64-byte aligned.
 * Own: *out is yours: mpx_arena_free; keeps seg until then (seg stays
 * yours: mpx_arena_free does not free it). */
MPX_API int mpx_arena_format(mpx_arena_t **out, mpx_segment_t *seg,
                             size_t offset, size_t size);
MPX_API int mpx_arena_attach(mpx_arena_t **out, mpx_segment_t *seg,
                             size_t offset);
/* Own: returns a segment borrowed until mpx_arena_free (for a, or the
 * caller's segment given to format/attach). */
MPX_API mpx_segment_t *mpx_arena_segment(const mpx_arena_t *a);
/* Allocate `size` bytes (16-byte aligned, refcount 1, owned by the caller's
 * pid). A full arena waits up to `timeout` for space: MPX_ENOSPC when there
 * still is none, MPX_E2BIG when the request could never fit.
 * Own: the block *out is yours: mpx_arena_release. */
MPX_API int mpx_arena_alloc(mpx_arena_t *a, size_t size, double timeout,
                            mpx_ref_t *out);
/* The block's memory in this process, or NULL for a reference that is not
 * a live block. The pointer is valid while the caller holds a reference.
 * Own: returns memory borrowed until your last reference is released. */
MPX_API void *mpx_arena_ptr(const mpx_arena_t *a, mpx_ref_t ref);
/* Usable bytes of a live block (>= the size asked for), 0 if not live. */
MPX_API size_t mpx_arena_block_size(const mpx_arena_t *a, mpx_ref_t ref);
/* Add / drop a reference. The last release frees the block. MPX_ESTALE
 * for a reference that is not a live block (double free, use after free),
 * MPX_EINVAL for one that is not a block reference at all. */
MPX_API int mpx_arena_retain(mpx_arena_t *a, mpx_ref_t ref);
MPX_API int mpx_arena_release(mpx_arena_t *a, mpx_ref_t ref);
/* Hand the block to another process: mpx_arena_reclaim(pid) then frees it
 * when that process dies, no longer when the old owner does. Owner 0 is
 * nobody: reclaim never frees the block for a death, only its last
 * release does (a queue's blocks while they are queued). */
MPX_API int mpx_arena_give(mpx_arena_t *a, mpx_ref_t ref, pid_t owner);
MPX_API pid_t mpx_arena_owner(const mpx_arena_t *a, mpx_ref_t ref);
/* Free every block owned by `pid`, whatever its refcount, and every block
 * whose last reference was dropped by a process that died before freeing
 * it; references to them become stale. Returns the number freed. The
 * caller vouches that `pid` is gone (a supervisor that reaped it). */
MPX_API int mpx_arena_reclaim(mpx_arena_t *a, pid_t pid);
MPX_API int mpx_arena_stats(mpx_arena_t *a, mpx_arena_stats_t *st);
/* Check every invariant (blocks tile the heap without overlap, headers
 * valid, no two free neighbours, free lists hold exactly the free blocks,
 * accounting adds up). 0, or MPX_EBROKEN with mpx_last_error() naming the
 * first violation. Takes the lock; for tests and debugging. */
MPX_API int mpx_arena_check(mpx_arena_t *a);
/* Release this process's handle (and the arena's own segment, if it made
 * one). Blocks are not freed. */
MPX_API void mpx_arena_free(mpx_arena_t *a);

/* A bytes object (mpx/obj.h) for bytes [off, off+len) of an arena block,
 * in place: takes a reference on the block (mpx_arena_retain) and drops it
 * when the object dies. A new reference to the object; the arena handle
 * must outlive it. NULL (MPX_ERANGE / MPX_ESTALE in mpx_last_error) when
 * the range or the reference is not valid.
 * Own: the result is yours: mpx_obj_release; keeps a until the object
 * dies; your own reference on the block stays yours. */
MPX_API mpx_obj_t *mpx_obj_bytes_arena(mpx_arena_t *a, mpx_ref_t ref,
                                       size_t off, size_t len);

/* ---- Shared values and arrays (sharedctypes) ---------------------------- */

typedef enum {
  MPX_CT_INT8 = 1, MPX_CT_UINT8, MPX_CT_INT16, MPX_CT_UINT16,
  MPX_CT_INT32, MPX_CT_UINT32, MPX_CT_INT64, MPX_CT_UINT64,
  MPX_CT_FLOAT, MPX_CT_DOUBLE,
  MPX_CT_CHAR  /* one byte; an array of it is a byte string */
} mpx_ctype_t;

/* Bytes per element (0 for an unknown type), the C name ("int64"...). */
MPX_API size_t mpx_ctype_size(mpx_ctype_t t);
/* Own: mpx_ctype_name returns a static string, borrowed until the process
 * ends. */
MPX_API const char *mpx_ctype_name(mpx_ctype_t t);
/* Python's array/ctypes typecodes: b B h H i I l L q Q f d c. 0 if unknown. */
MPX_API mpx_ctype_t mpx_ctype_from_code(char code);

typedef enum {
  MPX_SHARED_RLOCK = 0, /* default: a new recursive lock, like Python */
  MPX_SHARED_LOCK,      /* a new non-recursive lock */
  MPX_SHARED_RAW,       /* no lock (RawValue / RawArray) */
  MPX_SHARED_USER_LOCK  /* opts.lock, supplied by the caller */
} mpx_shared_lock_t;

/* The process's default shared heap: an arena created on first use
 * (MPX_HEAP_SIZE bytes from the environment, default 64 MiB), inherited
 * by fork children. Borrowed: never free it. Send its segment to let
 * unrelated processes attach values by reference.
 * Own: *out is borrowed until the process ends; never free it. */
MPX_API int mpx_shared_heap(mpx_arena_t **out);

typedef struct {
  /* Where the data lives: NULL for the process's default shared heap. */
  mpx_arena_t *arena;
  mpx_shared_lock_t lock_kind;
  /* For MPX_SHARED_USER_LOCK: a lock in shared memory that outlives the
   * value; it is used, not owned. */
  mpx_lock_t *lock;
} mpx_shared_opts_t;

typedef struct mpx_shared_value_s mpx_shared_value_t;
typedef struct mpx_shared_array_s mpx_shared_array_t;

/* A scalar in shared memory, initialised from *init (NULL: zero).
 * Own: *out is yours: mpx_shared_value_free; copies init; keeps
 * opts->arena and opts->lock until the value is freed (both stay yours). */
MPX_API int mpx_shared_value_new(mpx_shared_value_t **out, mpx_ctype_t type,
                                 const void *init,
                                 const mpx_shared_opts_t *opts);
/* Attach in a process that did not inherit it: the arena and the value's
 * reference (mpx_shared_value_ref). Needs the lock to live in the value's
 * block (not MPX_SHARED_USER_LOCK).
 * Own: *out is yours: mpx_shared_value_free; keeps arena until then. */
MPX_API int mpx_shared_value_attach(mpx_shared_value_t **out,
                                    mpx_arena_t *arena, mpx_ref_t ref);
MPX_API mpx_ref_t mpx_shared_value_ref(const mpx_shared_value_t *v);
MPX_API mpx_ctype_t mpx_shared_value_type(const mpx_shared_value_t *v);
/* The value's memory (lock it yourself for read-modify-write: `+= 1` is
 * never atomic on its own) and its lock (NULL when raw).
 * Own: both borrowed until mpx_shared_value_free. */
MPX_API void *mpx_shared_value_ptr(mpx_shared_value_t *v);
MPX_API mpx_lock_t *mpx_shared_value_lock(mpx_shared_value_t *v);
/* Copy the value out / in under the lock.
 * Own: borrows out / copies in. */
MPX_API int mpx_shared_value_get(mpx_shared_value_t *v, void *out);
MPX_API int mpx_shared_value_set(mpx_shared_value_t *v, const void *in);
/* Drop this handle's reference; the block is freed with the last one. A
 * handle holds a reference only in the process that created or attached
 * it: a fork child's inherited copy holds none, so freeing it there frees
 * only the copy and never the parent's value. */
MPX_API void mpx_shared_value_free(mpx_shared_value_t *v);

/* An array of `len` elements, initialised from init[0..len) (NULL: zero).
 * Own: as mpx_shared_value_new / _attach, _ptr, _lock, _get / _set:
 * *out is yours (mpx_shared_array_free), init copied, arena and user lock
 * kept, ptr and lock borrowed until free, read borrows its buffer, write
 * copies. */
MPX_API int mpx_shared_array_new(mpx_shared_array_t **out, mpx_ctype_t type,
                                 size_t len, const void *init,
                                 const mpx_shared_opts_t *opts);
MPX_API int mpx_shared_array_attach(mpx_shared_array_t **out,
                                    mpx_arena_t *arena, mpx_ref_t ref);
MPX_API mpx_ref_t mpx_shared_array_ref(const mpx_shared_array_t *a);
MPX_API mpx_ctype_t mpx_shared_array_type(const mpx_shared_array_t *a);
MPX_API size_t mpx_shared_array_len(const mpx_shared_array_t *a);
MPX_API void *mpx_shared_array_ptr(mpx_shared_array_t *a);
MPX_API mpx_lock_t *mpx_shared_array_lock(mpx_shared_array_t *a);
/* Copy elements [start, start+n) out / in under the lock; MPX_ERANGE when
 * the range does not fit. */
MPX_API int mpx_shared_array_read(mpx_shared_array_t *a, size_t start,
                                  size_t n, void *out);
MPX_API int mpx_shared_array_write(mpx_shared_array_t *a, size_t start,
                                   size_t n, const void *in);
/* As mpx_shared_value_free. */
MPX_API void mpx_shared_array_free(mpx_shared_array_t *a);

/* ---- Named shared memory (Python's SharedMemory) ----------------------- */

/* A POSIX shm object (/dev/shm/NAME, mode 0600) mapped in this process.
 * Python's SharedMemory(name) can attach to it and the other way round.
 * Attaching never unlinks (unlike Python's resource tracker): only
 * mpx_shm_unlink() removes the name, and the creator decides when. (A
 * Python process that attaches still unlinks the name when it exits,
 * through its resource tracker, unless it passes track=False (3.13+) or
 * calls resource_tracker.unregister(shm._name, "shared_memory").) */
typedef struct mpx_shm_s mpx_shm_t;

enum {
  /* Do not record the name in the installed registry. */
  MPX_SHM_UNTRACKED = 1u << 0,
  MPX_SHM_PREFAULT = 1u << 1,
};

/* name: without or with a leading '/', at most 250 bytes, no other '/';
 * NULL picks a fresh "mpx_<16 hex digits>". size: exact, > 0. MPX_EEXIST
 * when the name exists, MPX_EINVAL for size 0 or a bad name,
 * MPX_ENAMETOOLONG past 250 bytes. MPX_ENOSPC when the installed registry
 * is full (and the create is tracked): then nothing is created, so no
 * untracked name ever exists.
 * Own: *out is yours: mpx_shm_close; copies name. */
MPX_API int mpx_shm_create(mpx_shm_t **out, const char *name, size_t size,
                           unsigned flags);
/* MPX_ENOENT when there is no such name. The size is the object's.
 * Own: *out is yours: mpx_shm_close; copies name. */
MPX_API int mpx_shm_attach(mpx_shm_t **out, const char *name, unsigned flags);
/* The name without the leading '/' (owned by the handle).
 * Own: the name and the mapping (mpx_shm_buf) are borrowed until
 * mpx_shm_close. */
MPX_API const char *mpx_shm_name(const mpx_shm_t *m);
MPX_API void *mpx_shm_buf(const mpx_shm_t *m);
MPX_API size_t mpx_shm_size(const mpx_shm_t *m);
/* Unmap and free the handle; the name stays. */
MPX_API void mpx_shm_close(mpx_shm_t *m);
/* Remove the name (mappings stay valid until closed) and its registry
 * entry. MPX_ENOENT when there is no such name. */
MPX_API int mpx_shm_unlink(const char *name);

/* A registry of named shm objects and the pids that created them, kept in
 * a segment shared by a supervisor and its children. Once installed in a
 * process, every tracked mpx_shm_create() in that process and in its fork
 * children records (pid, name) there; mpx_shm_unlink() removes the entry.
 * A supervisor calls mpx_shm_registry_reap(pid) when a child dies to
 * unlink what it left behind. Other processes attach via the fd. Calls
 * are thread- and process-safe (a robust lock in the segment); a process
 * killed at any point, even in the middle of mpx_shm_create(), leaves
 * nothing that a reap of its pid misses. */
typedef struct mpx_shm_registry_s mpx_shm_registry_t;

/* capacity: entries (default 1024 when 0, at most INT32_MAX).
 * Own: *out is yours: mpx_shm_registry_free. */
MPX_API int mpx_shm_registry_new(mpx_shm_registry_t **out, size_t capacity);
/* MPX_EINVAL when fd is not a registry segment.
 * Own: *out is yours: mpx_shm_registry_free; copies fd (a dup), fd stays
 * yours. mpx_shm_registry_fd's descriptor is borrowed until that free. */
MPX_API int mpx_shm_registry_attach(mpx_shm_registry_t **out, int fd);
MPX_API int mpx_shm_registry_fd(const mpx_shm_registry_t *r);
/* Make it this process's registry (NULL: none). The handle is borrowed and
 * must stay alive while installed.
 * Own: keeps r until another install or mpx_shm_registry_free(r). */
MPX_API void mpx_shm_registry_install(mpx_shm_registry_t *r);
/* Unlink every name recorded for `pid` (every name when pid is 0) and drop
 * the entries. Returns how many names it removed: a name already gone
 * only loses its entry and is not counted. */
MPX_API int mpx_shm_registry_reap(mpx_shm_registry_t *r, pid_t pid);
/* Number of names recorded for `pid` (all when 0). */
MPX_API int mpx_shm_registry_count(mpx_shm_registry_t *r, pid_t pid);
/* Unmap this handle (uninstalling it if installed). Reaps nothing. */
MPX_API void mpx_shm_registry_free(mpx_shm_registry_t *r);

#ifdef __cplusplus
}
#endif
#endif /* MPX_SHM_H */
