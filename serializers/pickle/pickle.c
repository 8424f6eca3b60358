/* pickle: Python's pickle format, the subset multiprocessing puts on the
 * wire (manager requests and replies, queue items), without ever running
 * or importing anything. Written against the public headers only.
 *
 * Decoding (protocols 2-5; the few protocol 0/1 opcodes marked * too):
 *   control  PROTO 0x80 (<= 5), FRAME 0x95 (length checked against the
 *            input, otherwise ignored), STOP '.' (exactly one value left,
 *            no open MARK, no trailing bytes), MARK '(', POP '0'*,
 *            POP_MARK '1'*, DUP '2'*
 *   memo     MEMOIZE 0x94, BINPUT 'q', LONG_BINPUT 'r', BINGET 'h',
 *            LONG_BINGET 'j'. Memo entries are shared references
 *            (mpx_obj_retain), so decoded values are DAGs. An index may be
 *            at most 256 beyond the number of puts so far (picklers number
 *            them densely), which bounds the memo by the input.
 *   scalars  NONE 'N', NEWTRUE 0x88, NEWFALSE 0x89 -> null, bool;
 *            BININT1 'K', BININT2 'M', BININT 'J', LONG1 0x8a, LONG4 0x8b
 *            -> int, or bigint beyond int64; BINFLOAT 'G' -> float
 *   str      SHORT_BINUNICODE 0x8c, BINUNICODE 'X', BINUNICODE8 0x8d: the
 *            bytes as they are (CPython writes surrogates with
 *            surrogatepass, which is not valid UTF-8)
 *   bytes    SHORT_BINBYTES 'C', BINBYTES 'B', BINBYTES8 0x8e,
 *            BYTEARRAY8 0x96
 *   py2 str  SHORT_BINSTRING 'U', BINSTRING 'T' (a negative length is an
 *            error), STRING 'S'* (a quoted Python 2 repr, escapes undone
 *            as codecs.escape_decode does) -> bytes: a Python 2 str is
 *            bytes, as CPython 3 reads it with encoding='bytes'. Bytes go
 *            back to Python 2 as str (below), so its str and unicode each
 *            come back as themselves.
 *   tuple    EMPTY_TUPLE ')', TUPLE1-3 0x85-0x87, MARK ... TUPLE 't'
 *   list     EMPTY_LIST ']', LIST 'l'*, APPEND 'a', APPENDS 'e' -> array
 *   dict     EMPTY_DICT '}', DICT 'd'*, SETITEM 's', SETITEMS 'u' -> map
 *   sets     EMPTY_SET 0x8f + ADDITEMS 0x90 -> opaque REDUCE builtins.set,
 *            FROZENSET 0x91 -> opaque REDUCE builtins.frozenset; args: a
 *            1-tuple holding an array of the items (what protocol 2 writes)
 *   objects  GLOBAL 'c', STACK_GLOBAL 0x93 -> opaque GLOBAL module.name;
 *            REDUCE 'R' -> opaque REDUCE; NEWOBJ 0x81 and NEWOBJ_EX 0x92
 *            (empty kwargs only) -> opaque NEWOBJ; BUILD 'b' sets the state
 *            of the opaque object below it (once; BUILD on anything else
 *            is an error).
 * Everything else is an error naming the opcode and its offset: the
 * out-of-band buffers (NEXT_BUFFER 0x97, READONLY_BUFFER 0x98), persistent
 * IDs, the extension registry, INST/OBJ, the other text opcodes of
 * protocol 0 (INT, LONG, FLOAT, UNICODE, PUT, GET...).
 *
 * Allow-list: REDUCE and NEWOBJ take only a GLOBAL node as the callable
 * and a tuple as its arguments; the result is a node naming what would be
 * called, never a call. These REDUCEs are data and become plain values:
 *   _codecs.encode(str, 'latin1')        -> bytes (protocol 2 bytes)
 *   builtins.bytes()                     -> b''   (protocol 2 empty bytes)
 *   builtins.bytearray(), (bytes), (str, 'latin-1') -> bytes
 * (when the str holds a code point above U+00FF the node stays opaque).
 * Everything else (builtins.complex, exceptions, set, Token, RebuildProxy)
 * stays an opaque node with module, name, args and state.
 * Names: below protocol 3, as CPython's fix_imports does, Python 2 names
 * are mapped to Python 3 ones: __builtin__ -> builtins, exceptions.X ->
 * builtins.X (StandardError -> Exception), copy_reg, Queue, thread, a few
 * renamed builtins and multiprocessing's error classes.
 *
 * Safety: every length is checked against the input left before reading.
 * Mutable values under construction (lists, dicts, sets, objects awaiting
 * BUILD) live in boxes; a box is sealed the first time it goes into
 * another value and cannot change afterwards. That rules out cycles, and
 * lets BUILD give an opaque node its state before the mpx_obj_t is made
 * (obj.h has no setter for it), so memo references see the state too.
 * Limits (mpx_decode_opts_t): max_depth bounds the nesting of every value
 * (arrays, tuples, maps and opaque nodes are a level each, as the encoder
 * counts them, so whatever decodes within 200 encodes);
 * max_items and max_bytes bound both every value's expanded size (shared
 * memo references counted each time they appear, so a consumer that walks
 * the result as a tree stays bounded) and the work done (insertions, map
 * key hashing, payload copies). Errors free everything built so far.
 *
 * Encoding: protocol 4 by default, 2, 3 or 5 on request, no FRAME, no
 * memo (CPython accepts both). null N, bool 0x88/0x89, int K/M/J/LONG1,
 * bigint LONG1/LONG4, float G, str 0x8c/X/0x8d (X only below 4), bytes
 * C/B/0x8e (protocol 2: _codecs.encode(latin-1 str, 'latin1'), as CPython
 * does), array ] + APPEND / MARK..APPENDS (batches of 1000), tuple ) /
 * 0x85-0x87 / MARK..TUPLE, map } + SETITEM / MARK..SETITEMS, opaque
 * STACK_GLOBAL (protocol 2: GLOBAL "module\nname\n", with Python 3 names
 * mapped back to Python 2's as CPython's fix_imports does: builtins.KeyError
 * -> exceptions.KeyError, queue -> Queue, builtins -> __builtin__...; so
 * CPython 2.7 loads them) then, unless GLOBAL,
 * its args (a tuple; none: ()) and REDUCE or NEWOBJ, then state + BUILD.
 * Nesting deeper than 200 is MPX_ECODEC. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpx.h>

#define ENC_MAX_DEPTH 200u
#define MEMO_SLACK 256u
#define BATCH 1000u

/* ---- opcode names, for messages ------------------------------------------ */

static const char *const op_names[256] = {
    ['(' ] = "MARK",         ['.'] = "STOP",          ['0'] = "POP",
    ['1'] = "POP_MARK",      ['2'] = "DUP",           ['F'] = "FLOAT",
    ['I'] = "INT",           ['J'] = "BININT",        ['K'] = "BININT1",
    ['L'] = "LONG",          ['M'] = "BININT2",       ['N'] = "NONE",
    ['P'] = "PERSID",        ['Q'] = "BINPERSID",     ['R'] = "REDUCE",
    ['S'] = "STRING",        ['T'] = "BINSTRING",     ['U'] = "SHORT_BINSTRING",
    ['V'] = "UNICODE",       ['X'] = "BINUNICODE",    ['a'] = "APPEND",
    ['b'] = "BUILD",         ['c'] = "GLOBAL",        ['d'] = "DICT",
    ['}'] = "EMPTY_DICT",    ['e'] = "APPENDS",       ['g'] = "GET",
    ['h'] = "BINGET",        ['i'] = "INST",          ['j'] = "LONG_BINGET",
    ['l'] = "LIST",          [']'] = "EMPTY_LIST",    ['o'] = "OBJ",
    ['p'] = "PUT",           ['q'] = "BINPUT",        ['r'] = "LONG_BINPUT",
    ['s'] = "SETITEM",       ['t'] = "TUPLE",         [')'] = "EMPTY_TUPLE",
    ['u'] = "SETITEMS",      ['G'] = "BINFLOAT",      [0x80] = "PROTO",
    [0x81] = "NEWOBJ",       [0x82] = "EXT1",         [0x83] = "EXT2",
    [0x84] = "EXT4",         [0x85] = "TUPLE1",       [0x86] = "TUPLE2",
    [0x87] = "TUPLE3",       [0x88] = "NEWTRUE",      [0x89] = "NEWFALSE",
    [0x8a] = "LONG1",        [0x8b] = "LONG4",        ['B'] = "BINBYTES",
    ['C'] = "SHORT_BINBYTES", [0x8c] = "SHORT_BINUNICODE",
    [0x8d] = "BINUNICODE8",  [0x8e] = "BINBYTES8",    [0x8f] = "EMPTY_SET",
    [0x90] = "ADDITEMS",     [0x91] = "FROZENSET",    [0x92] = "NEWOBJ_EX",
    [0x93] = "STACK_GLOBAL", [0x94] = "MEMOIZE",      [0x95] = "FRAME",
    [0x96] = "BYTEARRAY8",   [0x97] = "NEXT_BUFFER",  [0x98] = "READONLY_BUFFER",
};

static void rel(mpx_obj_t *o) {
  if (o != NULL) mpx_obj_release(o);
}

/* ---- decoder state --------------------------------------------------------- */

/* The size of a value as a tree: shared (memo) parts count every time. */
typedef struct {
  size_t depth; /* nesting: 0 for scalars, 1 for [] or a GLOBAL node */
  size_t items; /* container elements */
  size_t bytes; /* str, bytes, bigint and name payload */
} meta_t;

enum { BOX_LIST, BOX_DICT, BOX_SET, BOX_OBJ };

/* A mutable value under construction, referenced from stack and memo. */
typedef struct {
  int kind;
  int sealed;      /* inside another value: frozen */
  size_t refs;     /* stack and memo slots holding it */
  mpx_obj_t *c;    /* LIST/DICT: the container; SET: the item array */
  mpx_obj_t *done; /* the finished object, made when sealed */
  mpx_opaque_kind_t okind; /* OBJ: REDUCE or NEWOBJ of cls */
  mpx_obj_t *cls, *args, *state;
  meta_t m;
} box_t;

/* A stack or memo slot: a plain (immutable) object, a box, or empty. */
typedef struct {
  mpx_obj_t *o;
  box_t *b;
  meta_t m; /* plain values only: a box keeps its own */
} val_t;

typedef struct {
  const uint8_t *p;
  size_t n, pos;
  size_t op; /* offset of the opcode being run */
  int proto;
  int borrow;
  size_t max_depth, max_items, max_bytes;
  size_t items_used, bytes_used; /* work so far */
  val_t *st;
  size_t top, st_cap;
  size_t *marks;
  size_t nmarks, marks_cap;
  val_t *memo;
  size_t memo_len;   /* slots allocated and zeroed */
  size_t memo_count; /* slots filled: MEMOIZE's index */
  size_t memo_puts;
  mpx_codec_error_t *err;
} dec_t;

static const char *opname(uint8_t op) {
  return op_names[op] != NULL ? op_names[op] : "?";
}

static int fail(dec_t *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(dec_t *d, const char *fmt, ...) {
  va_list ap;
  d->err->offset = d->op;
  va_start(ap, fmt);
  vsnprintf(d->err->msg, sizeof d->err->msg, fmt, ap);
  va_end(ap);
  return MPX_ECODEC;
}

static int nomem(dec_t *d) {
  d->err->offset = d->op;
  snprintf(d->err->msg, sizeof d->err->msg, "out of memory");
  return MPX_ENOMEM;
}

static size_t sat_add(size_t a, size_t b) {
  return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

/* child goes `extra` levels below parent's own (a set's items sit in an
 * array in its args tuple). */
static void meta_add_at(meta_t *parent, const meta_t *child, size_t extra) {
  if (child->depth + 1 + extra > parent->depth)
    parent->depth = child->depth + 1 + extra;
  parent->items = sat_add(parent->items, sat_add(child->items, 1));
  parent->bytes = sat_add(parent->bytes, child->bytes);
}

static void meta_add(meta_t *parent, const meta_t *child) {
  meta_add_at(parent, child, 0);
}

static int check_meta(dec_t *d, const meta_t *m) {
  if (m->depth > d->max_depth)
    return fail(d, "%s: nesting deeper than %zu", opname(d->p[d->op]),
                d->max_depth);
  if (m->items > d->max_items)
    return fail(d, "%s: more than %zu items", opname(d->p[d->op]),
                d->max_items);
  if (m->bytes > d->max_bytes)
    return fail(d, "%s: more than %zu bytes of payload", opname(d->p[d->op]),
                d->max_bytes);
  return 0;
}

static int use_items(dec_t *d, size_t k) {
  d->items_used = sat_add(d->items_used, k);
  if (d->items_used > d->max_items)
    return fail(d, "%s: more than %zu items", opname(d->p[d->op]),
                d->max_items);
  return 0;
}

static int use_bytes(dec_t *d, size_t k) {
  d->bytes_used = sat_add(d->bytes_used, k);
  if (d->bytes_used > d->max_bytes)
    return fail(d, "%s: more than %zu bytes of payload", opname(d->p[d->op]),
                d->max_bytes);
  return 0;
}

static const meta_t *vmeta(const val_t *v) {
  return v->b != NULL ? &v->b->m : &v->m;
}

static void box_unref(box_t *b) {
  if (--b->refs != 0) return;
  rel(b->c);
  rel(b->done);
  rel(b->cls);
  rel(b->args);
  rel(b->state);
  free(b);
}

static void val_release(val_t *v) {
  if (v->o != NULL) mpx_obj_release(v->o);
  if (v->b != NULL) box_unref(v->b);
  v->o = NULL;
  v->b = NULL;
}

static val_t val_copy(const val_t *v) {
  val_t c = *v;
  if (c.o != NULL) mpx_obj_retain(c.o);
  if (c.b != NULL) c.b->refs++;
  return c;
}

/* Seal a box: the finished object, made once. */
static mpx_obj_t *box_finish(box_t *b) {
  b->sealed = 1;
  if (b->done != NULL) return b->done;
  switch (b->kind) {
    case BOX_LIST:
    case BOX_DICT:
      b->done = b->c;
      b->c = NULL;
      break;
    case BOX_SET: {
      mpx_obj_t *args = mpx_obj_tuple(1);
      if (args == NULL) return NULL;
      if (mpx_obj_append(args, b->c) != 0) {
        b->c = NULL;
        mpx_obj_release(args);
        return NULL;
      }
      b->c = NULL;
      b->done = mpx_obj_opaque(MPX_OPAQUE_REDUCE, "builtins", "set", args,
                               NULL);
      break;
    }
    default: {
      mpx_obj_t *args = b->args, *state = b->state;
      b->args = b->state = NULL;
      b->done = mpx_obj_opaque(b->okind, mpx_obj_opaque_module(b->cls),
                               mpx_obj_opaque_name(b->cls), args, state);
      break;
    }
  }
  return b->done;
}

/* Take the value out of slot v as a new reference to store in another
 * value (a box gets sealed). The slot is left empty, even on failure. */
static mpx_obj_t *take(val_t *v) {
  mpx_obj_t *o = v->o;
  if (v->b != NULL) {
    o = box_finish(v->b);
    if (o != NULL) mpx_obj_retain(o);
    box_unref(v->b);
  }
  v->o = NULL;
  v->b = NULL;
  return o;
}

/* Push; takes v even on failure. */
static int push(dec_t *d, val_t v) {
  if (d->top == d->st_cap) {
    size_t cap = d->st_cap ? d->st_cap * 2 : 64;
    val_t *s = realloc(d->st, cap * sizeof *s);
    if (s == NULL) {
      val_release(&v);
      return nomem(d);
    }
    d->st = s;
    d->st_cap = cap;
  }
  d->st[d->top++] = v;
  return 0;
}

/* Push a new plain object (NULL: out of memory). */
static int push_obj(dec_t *d, mpx_obj_t *o, meta_t m) {
  val_t v = {o, NULL, m};
  if (o == NULL) return nomem(d);
  return push(d, v);
}

static int push_box(dec_t *d, int kind, mpx_obj_t *c, meta_t m) {
  box_t *b;
  val_t v = {NULL, NULL, {0, 0, 0}};
  if (kind != BOX_OBJ && c == NULL) return nomem(d);
  b = calloc(1, sizeof *b);
  if (b == NULL) {
    rel(c);
    return nomem(d);
  }
  b->kind = kind;
  b->refs = 1;
  b->c = c;
  b->m = m;
  v.b = b;
  return push(d, v);
}

static size_t fence(const dec_t *d) {
  return d->nmarks ? d->marks[d->nmarks - 1] : 0;
}

/* At least k values above the last MARK. */
static int need_stack(dec_t *d, size_t k) {
  if (d->top - fence(d) < k)
    return fail(d, "stack underflow at %s", opname(d->p[d->op]));
  return 0;
}

static int pop_mark(dec_t *d, size_t *m) {
  if (d->nmarks == 0)
    return fail(d, "%s without a MARK", opname(d->p[d->op]));
  *m = d->marks[--d->nmarks];
  return 0;
}

/* k input bytes are there to read. */
static int need_input(dec_t *d, uint64_t k) {
  size_t left = d->n - d->pos;
  if (k > left)
    return fail(d, "truncated %s: needs %llu bytes, %zu left",
                opname(d->p[d->op]), (unsigned long long)k, left);
  return 0;
}

static uint64_t rd_le(dec_t *d, unsigned w) {
  uint64_t v = 0;
  for (unsigned i = 0; i < w; i++) v |= (uint64_t)d->p[d->pos + i] << (8 * i);
  d->pos += w;
  return v;
}

/* Read a little-endian length (or index) of w bytes. */
static int rd_len(dec_t *d, unsigned w, uint64_t *v) {
  int rc = need_input(d, w);
  if (rc == 0) *v = rd_le(d, w);
  return rc;
}

/* ---- values ----------------------------------------------------------------- */

static int load_long(dec_t *d, const uint8_t *p, size_t n) {
  meta_t m = {0, 0, 0};
  if (n <= 8) {
    uint64_t u = 0;
    for (size_t i = 0; i < n; i++) u |= (uint64_t)p[i] << (8 * i);
    if (n > 0 && n < 8 && (p[n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n);
    return push_obj(d, mpx_obj_int((int64_t)u), m);
  }
  m.bytes = n;
  int rc = use_bytes(d, n);
  if (rc == 0) rc = check_meta(d, &m);
  return rc ? rc : push_obj(d, mpx_obj_bigint(p, n), m);
}

static int load_payload(dec_t *d, unsigned lenw, int is_str) {
  uint64_t len;
  meta_t m = {0, 0, 0};
  const uint8_t *p;
  mpx_obj_t *o;
  int rc = rd_len(d, lenw, &len);
  if (rc == 0) rc = need_input(d, len);
  if (rc != 0) return rc;
  m.bytes = (size_t)len;
  if ((rc = use_bytes(d, m.bytes)) != 0 || (rc = check_meta(d, &m)) != 0)
    return rc;
  p = d->p + d->pos;
  d->pos += (size_t)len;
  if (d->borrow)
    o = is_str ? mpx_obj_str_external((const char *)p, m.bytes, NULL, NULL)
               : mpx_obj_bytes_external(p, m.bytes, NULL, NULL);
  else
    o = is_str ? mpx_obj_str((const char *)p, m.bytes)
               : mpx_obj_bytes(p, m.bytes);
  return push_obj(d, o, m);
}

/* BINSTRING: like BINBYTES, but its length is signed (CPython 3 refuses
 * a negative one). */
static int load_binstring(dec_t *d) {
  uint64_t v;
  int rc = need_input(d, 4);
  if (rc != 0) return rc;
  v = rd_le(d, 4);
  d->pos -= 4;
  if (v > INT32_MAX) return fail(d, "BINSTRING with a negative length");
  return load_payload(d, 4, 0);
}

static int hexval(uint8_t c) {
  return c >= '0' && c <= '9'   ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

/* Undo Python 2's repr escapes into out (as codecs.escape_decode does:
 * unknown escapes keep their backslash); out holds n bytes. The length
 * written, or -1 for a bad \x escape or a trailing backslash. */
static long unescape(const uint8_t *p, size_t n, uint8_t *out) {
  size_t j = 0;
  for (size_t i = 0; i < n;) {
    uint8_t c = p[i++];
    if (c != '\\') {
      out[j++] = c;
      continue;
    }
    if (i == n) return -1;
    c = p[i++];
    switch (c) {
      case '\\': case '\'': case '"': out[j++] = c; break;
      case 'b': out[j++] = '\b'; break;
      case 'f': out[j++] = '\f'; break;
      case 't': out[j++] = '\t'; break;
      case 'n': out[j++] = '\n'; break;
      case 'r': out[j++] = '\r'; break;
      case 'v': out[j++] = '\v'; break;
      case 'a': out[j++] = '\a'; break;
      case 'x': {
        int hi = i + 1 < n ? hexval(p[i]) : -1, lo = hi >= 0 ? hexval(p[i + 1]) : -1;
        if (lo < 0) return -1;
        out[j++] = (uint8_t)(hi << 4 | lo);
        i += 2;
        break;
      }
      default:
        if (c >= '0' && c <= '7') {
          unsigned v = c - '0';
          for (int k = 0; k < 2 && i < n && p[i] >= '0' && p[i] <= '7'; k++)
            v = v * 8 + (p[i++] - '0');
          out[j++] = (uint8_t)v;
        } else {
          out[j++] = '\\';
          out[j++] = c;
        }
    }
  }
  return (long)j;
}

/* STRING (protocol 0): a quoted Python 2 repr up to the newline, as bytes. */
static int load_string(dec_t *d) {
  const uint8_t *p = d->p + d->pos, *nl = memchr(p, '\n', d->n - d->pos);
  meta_t m = {0, 0, 0};
  size_t len;
  uint8_t *buf;
  long k;
  int rc;
  if (nl == NULL) return fail(d, "truncated STRING: no newline");
  len = (size_t)(nl - p);
  if (len < 2 || p[0] != p[len - 1] || (p[0] != '\'' && p[0] != '"'))
    return fail(d, "STRING: not a quoted string");
  m.bytes = len - 2;
  if ((rc = use_bytes(d, m.bytes)) != 0 || (rc = check_meta(d, &m)) != 0)
    return rc;
  if ((buf = malloc(len)) == NULL) return nomem(d);
  k = unescape(p + 1, len - 2, buf);
  if (k < 0) {
    free(buf);
    return fail(d, "STRING: invalid \\x escape or trailing backslash");
  }
  d->pos += len + 1;
  m.bytes = (size_t)k;
  rc = push_obj(d, mpx_obj_bytes(buf, (size_t)k), m);
  free(buf);
  return rc;
}

/* Python 2 names, as CPython's _compat_pickle maps them (the part that
 * can meet multiprocessing). */
static const char *const module_map[][2] = {
    {"__builtin__", "builtins"}, {"copy_reg", "copyreg"},
    {"Queue", "queue"},          {"thread", "_thread"},
    {"cPickle", "pickle"},       {"UserDict", "collections"},
    {"UserList", "collections"}, {"UserString", "collections"},
};
static const char *const name_map[][4] = {
    {"__builtin__", "xrange", "builtins", "range"},
    {"__builtin__", "unicode", "builtins", "str"},
    {"__builtin__", "basestring", "builtins", "str"},
    {"__builtin__", "long", "builtins", "int"},
    {"__builtin__", "unichr", "builtins", "chr"},
    {"__builtin__", "reduce", "functools", "reduce"},
    {"__builtin__", "intern", "sys", "intern"},
    {"exceptions", "StandardError", "builtins", "Exception"},
    {"multiprocessing", "AuthenticationError", "multiprocessing.context",
     "AuthenticationError"},
    {"multiprocessing", "BufferTooShort", "multiprocessing.context",
     "BufferTooShort"},
    {"multiprocessing", "ProcessError", "multiprocessing.context",
     "ProcessError"},
    {"multiprocessing", "TimeoutError", "multiprocessing.context",
     "TimeoutError"},
};

/* Push an opaque GLOBAL node for module.name (not NUL-terminated). */
static int load_global(dec_t *d, const char *mod, size_t ml, const char *name,
                       size_t nl) {
  char *buf;
  const char *mm, *nn;
  meta_t m = {1, 0, 0}; /* a level, as the encoder counts opaque nodes */
  int rc;
  if (memchr(mod, 0, ml) != NULL || memchr(name, 0, nl) != NULL)
    return fail(d, "%s: NUL in a module or class name", opname(d->p[d->op]));
  m.bytes = sat_add(ml, nl);
  if ((rc = use_bytes(d, m.bytes)) != 0 || (rc = check_meta(d, &m)) != 0)
    return rc;
  buf = malloc(ml + nl + 2);
  if (buf == NULL) return nomem(d);
  memcpy(buf, mod, ml);
  buf[ml] = 0;
  memcpy(buf + ml + 1, name, nl);
  buf[ml + nl + 1] = 0;
  mm = buf;
  nn = buf + ml + 1;
  if (d->proto < 3) {
    size_t i;
    int done = 0;
    for (i = 0; i < sizeof name_map / sizeof name_map[0]; i++)
      if (!strcmp(mm, name_map[i][0]) && !strcmp(nn, name_map[i][1])) {
        mm = name_map[i][2];
        nn = name_map[i][3];
        done = 1;
        break;
      }
    if (!done && !strcmp(mm, "exceptions")) mm = "builtins";
    for (i = 0; !done && i < sizeof module_map / sizeof module_map[0]; i++)
      if (!strcmp(mm, module_map[i][0])) {
        mm = module_map[i][1];
        break;
      }
  }
  rc = push_obj(d, mpx_obj_opaque(MPX_OPAQUE_GLOBAL, mm, nn, NULL, NULL), m);
  free(buf);
  return rc;
}

static int load_stack_global(dec_t *d) {
  const mpx_obj_t *mo, *no;
  const char *mod, *name;
  size_t ml, nl;
  int rc = need_stack(d, 2);
  if (rc != 0) return rc;
  mo = d->st[d->top - 2].o;
  no = d->st[d->top - 1].o;
  if (mo == NULL || no == NULL || mpx_obj_type(mo) != MPX_OBJ_STR ||
      mpx_obj_type(no) != MPX_OBJ_STR)
    return fail(d, "STACK_GLOBAL: module and name must be str");
  mod = mpx_obj_str_data(mo, &ml);
  name = mpx_obj_str_data(no, &nl);
  if ((rc = load_global(d, mod, ml, name, nl)) != 0) return rc;
  /* The new node is on top (the stack may have moved): drop the two
   * strings under it. */
  val_release(&d->st[d->top - 3]);
  val_release(&d->st[d->top - 2]);
  d->st[d->top - 3] = d->st[d->top - 1];
  d->top -= 2;
  return 0;
}

static int load_text_global(dec_t *d) {
  const uint8_t *mod = d->p + d->pos, *nl1, *nl2;
  size_t left = d->n - d->pos;
  nl1 = memchr(mod, '\n', left);
  if (nl1 == NULL) return fail(d, "truncated GLOBAL: no newline after the module");
  nl2 = memchr(nl1 + 1, '\n', left - (size_t)(nl1 + 1 - mod));
  if (nl2 == NULL) return fail(d, "truncated GLOBAL: no newline after the name");
  d->pos += (size_t)(nl2 + 1 - mod);
  return load_global(d, (const char *)mod, (size_t)(nl1 - mod),
                     (const char *)nl1 + 1, (size_t)(nl2 - nl1 - 1));
}

/* A tuple of the values in st[start..top). */
static int build_tuple(dec_t *d, size_t start) {
  meta_t m = {1, 0, 0};
  size_t k = d->top - start;
  mpx_obj_t *t;
  int rc;
  for (size_t i = start; i < d->top; i++) meta_add(&m, vmeta(&d->st[i]));
  if ((rc = use_items(d, k)) != 0 || (rc = check_meta(d, &m)) != 0) return rc;
  t = mpx_obj_tuple(k);
  if (t == NULL) return nomem(d);
  for (size_t i = start; i < d->top; i++) {
    mpx_obj_t *o = take(&d->st[i]);
    if (o == NULL || mpx_obj_append(t, o) != 0) {
      mpx_obj_release(t);
      return nomem(d);
    }
  }
  d->top = start;
  return push_obj(d, t, m);
}

/* The box at st[i] if it is an unsealed one of this kind. */
static box_t *target(dec_t *d, size_t i, int kind) {
  box_t *b = d->st[i].b;
  return b != NULL && b->kind == kind && !b->sealed ? b : NULL;
}

/* what: "a list", "an object ..." */
static int target_err(dec_t *d, size_t i, const char *what) {
  box_t *b = d->st[i].b;
  if (b != NULL && b->sealed)
    return fail(d, "%s: the target is already inside another value "
                "(recursive structures are not supported)",
                opname(d->p[d->op]));
  return fail(d, "%s: the target is not %s", opname(d->p[d->op]), what);
}

/* Append st[start..top) to the list or set box b (at st[start - 1]). */
static int extend(dec_t *d, box_t *b, size_t start) {
  meta_t m = b->m;
  size_t extra = b->kind == BOX_SET ? 2 : 0;
  int rc;
  for (size_t i = start; i < d->top; i++) {
    if (d->st[i].b == b)
      return fail(d, "%s: a container inside itself (recursive structures "
                  "are not supported)", opname(d->p[d->op]));
    meta_add_at(&m, vmeta(&d->st[i]), extra);
  }
  if ((rc = use_items(d, d->top - start)) != 0 || (rc = check_meta(d, &m)) != 0)
    return rc;
  for (size_t i = start; i < d->top; i++) {
    mpx_obj_t *o = take(&d->st[i]);
    if (o == NULL || mpx_obj_append(b->c, o) != 0) return nomem(d);
  }
  d->top = start;
  b->m = m;
  return 0;
}

/* Set the pairs st[start..top) in the dict box b. */
static int set_items(dec_t *d, box_t *b, size_t start) {
  meta_t m = b->m;
  size_t work = 0, kbytes = 0;
  int rc;
  if ((d->top - start) % 2 != 0)
    return fail(d, "%s: odd number of keys and values", opname(d->p[d->op]));
  for (size_t i = start; i < d->top; i++) {
    const meta_t *vm = vmeta(&d->st[i]);
    if (d->st[i].b == b)
      return fail(d, "%s: a dict inside itself (recursive structures are not "
                  "supported)", opname(d->p[d->op]));
    meta_add(&m, vm);
    work = sat_add(work, 1);
    if ((i - start) % 2 == 0) { /* a key: hashing walks all of it */
      work = sat_add(work, vm->items);
      kbytes = sat_add(kbytes, vm->bytes);
    }
  }
  if ((rc = use_items(d, work)) != 0 || (rc = use_bytes(d, kbytes)) != 0 ||
      (rc = check_meta(d, &m)) != 0)
    return rc;
  for (size_t i = start; i < d->top; i += 2) {
    mpx_obj_t *k = take(&d->st[i]), *v = take(&d->st[i + 1]);
    if (k == NULL || v == NULL) {
      rel(k);
      rel(v);
      return nomem(d);
    }
    if (mpx_obj_map_set(b->c, k, v) != 0) return nomem(d);
  }
  d->top = start;
  b->m = m;
  return 0;
}

/* Latin-1 bytes from a str, if every code point is below U+0100. */
static int latin1_bytes(dec_t *d, const mpx_obj_t *s, mpx_obj_t **out) {
  size_t n, j = 0;
  const uint8_t *p = (const uint8_t *)mpx_obj_str_data(s, &n);
  uint8_t *buf;
  int rc;
  if ((rc = use_bytes(d, n)) != 0) return rc;
  buf = malloc(n ? n : 1);
  if (buf == NULL) return nomem(d);
  for (size_t i = 0; i < n; j++) {
    if (p[i] < 0x80) {
      buf[j] = p[i++];
    } else if ((p[i] == 0xC2 || p[i] == 0xC3) && i + 1 < n &&
               (p[i + 1] & 0xC0) == 0x80) {
      buf[j] = (uint8_t)(((p[i] & 0x1F) << 6) | (p[i + 1] & 0x3F));
      i += 2;
    } else {
      free(buf);
      return 0; /* not Latin-1: stays opaque */
    }
  }
  *out = mpx_obj_bytes(buf, j);
  free(buf);
  return *out != NULL ? 1 : nomem(d);
}

/* o is the text s, as a str or (Python 2's str) as bytes. */
static int is_str(const mpx_obj_t *o, const char *s) {
  size_t n;
  const char *p;
  if (mpx_obj_type(o) == MPX_OBJ_STR) p = mpx_obj_str_data(o, &n);
  else if (mpx_obj_type(o) == MPX_OBJ_BYTES) p = mpx_obj_bytes_data(o, &n);
  else return 0;
  return n == strlen(s) && memcmp(p, s, n) == 0;
}

/* REDUCEs that are data: 1 with *out the value, 0 to stay opaque. */
static int convert(dec_t *d, const char *mod, const char *name,
                   const mpx_obj_t *args, mpx_obj_t **out) {
  size_t n = mpx_obj_len(args);
  mpx_obj_t *a0 = n > 0 ? mpx_obj_item(args, 0) : NULL;
  mpx_obj_t *a1 = n > 1 ? mpx_obj_item(args, 1) : NULL;
  int latin1 = n == 2 && mpx_obj_type(a0) == MPX_OBJ_STR &&
               (is_str(a1, "latin1") || is_str(a1, "latin-1"));
  if (!strcmp(mod, "_codecs") && !strcmp(name, "encode"))
    return latin1 ? latin1_bytes(d, a0, out) : 0;
  if (strcmp(mod, "builtins") != 0) return 0;
  if (!strcmp(name, "bytes") || !strcmp(name, "bytearray")) {
    if (n == 0) {
      *out = mpx_obj_bytes("", 0);
      return *out != NULL ? 1 : nomem(d);
    }
    if (strcmp(name, "bytearray") != 0) return 0;
    if (n == 1 && mpx_obj_type(a0) == MPX_OBJ_BYTES) {
      *out = mpx_obj_retain(a0);
      return 1;
    }
    return latin1 ? latin1_bytes(d, a0, out) : 0;
  }
  return 0;
}

/* REDUCE / NEWOBJ: st[top-2] the class, st[top-1] its args. */
static int load_call(dec_t *d, mpx_opaque_kind_t kind) {
  val_t *cv, *av;
  meta_t m = {1, 0, 0};
  box_t *b;
  mpx_obj_t *conv = NULL;
  int rc = need_stack(d, 2);
  if (rc != 0) return rc;
  cv = &d->st[d->top - 2];
  av = &d->st[d->top - 1];
  if (cv->o == NULL || mpx_obj_type(cv->o) != MPX_OBJ_OPAQUE ||
      mpx_obj_opaque_kind(cv->o) != MPX_OPAQUE_GLOBAL)
    return fail(d, "%s: the callable is not a global (only module.name "
                "references are allowed)", opname(d->p[d->op]));
  if (av->o == NULL || mpx_obj_type(av->o) != MPX_OBJ_TUPLE)
    return fail(d, "%s: the arguments are not a tuple", opname(d->p[d->op]));
  if (kind == MPX_OPAQUE_REDUCE) {
    rc = convert(d, mpx_obj_opaque_module(cv->o), mpx_obj_opaque_name(cv->o),
                 av->o, &conv);
    if (rc < 0) return rc;
    if (rc == 1) {
      meta_t cm = {0, 0, 0};
      mpx_obj_bytes_data(conv, &cm.bytes);
      val_release(cv);
      val_release(av);
      d->top -= 2;
      return push_obj(d, conv, cm);
    }
  }
  meta_add(&m, vmeta(av));
  m.bytes = sat_add(m.bytes, cv->m.bytes);
  /* use_bytes: sealing copies the names. */
  if ((rc = use_items(d, 1)) != 0 || (rc = use_bytes(d, cv->m.bytes)) != 0 ||
      (rc = check_meta(d, &m)) != 0)
    return rc;
  b = calloc(1, sizeof *b);
  if (b == NULL) return nomem(d);
  b->kind = BOX_OBJ;
  b->refs = 1;
  b->okind = kind;
  b->m = m;
  b->cls = cv->o;
  b->args = av->o;
  d->top -= 2;
  d->st[d->top].o = NULL;
  d->st[d->top].b = b; /* the class's slot now holds the box */
  d->top++;
  return 0;
}

static int load_build(dec_t *d) {
  val_t *sv;
  box_t *b;
  meta_t m;
  int rc = need_stack(d, 2);
  if (rc != 0) return rc;
  b = target(d, d->top - 2, BOX_OBJ);
  if (b == NULL) return target_err(d, d->top - 2, "an object made by REDUCE or NEWOBJ");
  if (b->state != NULL) return fail(d, "BUILD: the object already has a state");
  sv = &d->st[d->top - 1];
  if (sv->b == b) return fail(d, "BUILD: an object as its own state");
  m = b->m;
  meta_add(&m, vmeta(sv));
  if ((rc = use_items(d, 1)) != 0 || (rc = check_meta(d, &m)) != 0) return rc;
  b->state = take(sv);
  d->top--;
  if (b->state == NULL) return nomem(d);
  b->m = m;
  return 0;
}

static int memo_put(dec_t *d, uint64_t idx) {
  int rc = need_stack(d, 1);
  if (rc != 0) return rc;
  if (idx > d->memo_puts + MEMO_SLACK)
    return fail(d, "%s %llu: memo index too far ahead", opname(d->p[d->op]),
                (unsigned long long)idx);
  if (idx >= d->memo_len) {
    size_t len = d->memo_len ? d->memo_len : 64;
    while (len <= idx) len *= 2;
    val_t *m = realloc(d->memo, len * sizeof *m);
    if (m == NULL) return nomem(d);
    memset(m + d->memo_len, 0, (len - d->memo_len) * sizeof *m);
    d->memo = m;
    d->memo_len = len;
  }
  if (d->memo[idx].o != NULL || d->memo[idx].b != NULL)
    val_release(&d->memo[idx]);
  else
    d->memo_count++;
  d->memo[idx] = val_copy(&d->st[d->top - 1]);
  d->memo_puts++;
  return 0;
}

static int memo_get(dec_t *d, uint64_t idx) {
  if (idx >= d->memo_len || (d->memo[idx].o == NULL && d->memo[idx].b == NULL))
    return fail(d, "%s %llu: no such memo entry", opname(d->p[d->op]),
                (unsigned long long)idx);
  return push(d, val_copy(&d->memo[idx]));
}

/* ---- the decode loop ------------------------------------------------------- */

/* One switch over the opcodes, kept whole (about 260 lines): each case is a few
 * lines, and one table of cases is how the pickle machine reads best. */
static int run(dec_t *d, mpx_obj_t **out) {
  /* A set is builtins.set(([items],)): three levels. */
  const meta_t scalar = {0, 0, 0}, empty = {1, 0, 0}, empty_set = {3, 2, 0};
  for (;;) {
    uint64_t v;
    size_t m = 0;
    int rc = 0;
    uint8_t op;
    box_t *b;
    if (d->pos >= d->n) {
      d->op = d->n;
      return fail(d, "truncated: no STOP");
    }
    d->op = d->pos;
    op = d->p[d->pos++];
    switch (op) {
      case 0x80: /* PROTO */
        if ((rc = rd_len(d, 1, &v)) == 0 && v > 5)
          rc = fail(d, "unsupported protocol %u", (unsigned)v);
        else if (rc == 0)
          d->proto = (int)v;
        break;
      case 0x95: /* FRAME */
        if ((rc = rd_len(d, 8, &v)) == 0 && v > d->n - d->pos)
          rc = fail(d, "FRAME of %llu bytes, %zu left", (unsigned long long)v,
                    d->n - d->pos);
        break;
      case '.': /* STOP */
        if (d->nmarks != 0) return fail(d, "STOP with an open MARK");
        if (d->top != 1)
          return d->top == 0 ? fail(d, "stack underflow at STOP")
                             : fail(d, "STOP with %zu values on the stack",
                                    d->top);
        if (d->pos != d->n) {
          size_t extra = d->n - d->pos;
          d->op = d->pos;
          return fail(d, "%zu trailing bytes after STOP", extra);
        }
        *out = take(&d->st[0]);
        d->top = 0;
        return *out != NULL ? 0 : nomem(d);
      case '(': /* MARK */
        if (d->nmarks == d->marks_cap) {
          size_t cap = d->marks_cap ? d->marks_cap * 2 : 16;
          size_t *mk = realloc(d->marks, cap * sizeof *mk);
          if (mk == NULL) return nomem(d);
          d->marks = mk;
          d->marks_cap = cap;
        }
        d->marks[d->nmarks++] = d->top;
        break;
      case '0': /* POP */
        if (d->top > fence(d))
          val_release(&d->st[--d->top]);
        else if (d->nmarks)
          d->nmarks--;
        else
          rc = fail(d, "stack underflow at POP");
        break;
      case '1': /* POP_MARK */
        if ((rc = pop_mark(d, &m)) == 0)
          while (d->top > m) val_release(&d->st[--d->top]);
        break;
      case '2': /* DUP */
        if ((rc = need_stack(d, 1)) == 0)
          rc = push(d, val_copy(&d->st[d->top - 1]));
        break;
      case 0x94: /* MEMOIZE */
        rc = memo_put(d, d->memo_count);
        break;
      case 'q': /* BINPUT */
      case 'r': /* LONG_BINPUT */
        if ((rc = rd_len(d, op == 'q' ? 1 : 4, &v)) == 0) rc = memo_put(d, v);
        break;
      case 'h': /* BINGET */
      case 'j': /* LONG_BINGET */
        if ((rc = rd_len(d, op == 'h' ? 1 : 4, &v)) == 0) rc = memo_get(d, v);
        break;
      case 'N':
        rc = push_obj(d, mpx_obj_null(), scalar);
        break;
      case 0x88:
      case 0x89:
        rc = push_obj(d, mpx_obj_bool(op == 0x88), scalar);
        break;
      case 'K':
      case 'M':
        if ((rc = rd_len(d, op == 'K' ? 1 : 2, &v)) == 0)
          rc = push_obj(d, mpx_obj_int((int64_t)v), scalar);
        break;
      case 'J':
        if ((rc = rd_len(d, 4, &v)) == 0)
          rc = push_obj(d, mpx_obj_int((int32_t)(uint32_t)v), scalar);
        break;
      case 0x8a: /* LONG1 */
      case 0x8b: /* LONG4 */
        if ((rc = rd_len(d, op == 0x8a ? 1 : 4, &v)) != 0) break;
        if (op == 0x8b && v > INT32_MAX) {
          rc = fail(d, "LONG4 with a negative length");
          break;
        }
        if ((rc = need_input(d, v)) == 0) {
          d->pos += (size_t)v;
          rc = load_long(d, d->p + d->pos - v, (size_t)v);
        }
        break;
      case 'G': { /* BINFLOAT: big-endian */
        union { uint64_t u; double f; } f;
        if ((rc = need_input(d, 8)) != 0) break;
        f.u = 0;
        for (size_t i = 0; i < 8; i++) f.u = (f.u << 8) | d->p[d->pos + i];
        d->pos += 8;
        rc = push_obj(d, mpx_obj_float(f.f), scalar);
        break;
      }
      case 0x8c: rc = load_payload(d, 1, 1); break;
      case 'X': rc = load_payload(d, 4, 1); break;
      case 0x8d: rc = load_payload(d, 8, 1); break;
      case 'C': rc = load_payload(d, 1, 0); break;
      /* Python 2's str: bytes (see the header) */
      case 'U': rc = load_payload(d, 1, 0); break; /* SHORT_BINSTRING */
      case 'T': rc = load_binstring(d); break;
      case 'S': rc = load_string(d); break;
      case 'B': rc = load_payload(d, 4, 0); break;
      case 0x8e: /* BINBYTES8 */
      case 0x96: /* BYTEARRAY8 */
        rc = load_payload(d, 8, 0);
        break;
      case ')':
        rc = push_obj(d, mpx_obj_tuple(0), empty);
        break;
      case 0x85:
      case 0x86:
      case 0x87:
        if ((rc = need_stack(d, op - 0x84u)) == 0)
          rc = build_tuple(d, d->top - (op - 0x84u));
        break;
      case 't':
        if ((rc = pop_mark(d, &m)) == 0) rc = build_tuple(d, m);
        break;
      case ']':
        rc = push_box(d, BOX_LIST, mpx_obj_array(0), empty);
        break;
      case '}':
        rc = push_box(d, BOX_DICT, mpx_obj_map(0), empty);
        break;
      case 0x8f: /* EMPTY_SET */
        rc = push_box(d, BOX_SET, mpx_obj_array(0), empty_set);
        break;
      case 'l': /* LIST: MARK items LIST */
      case 'd': /* DICT: MARK k v ... DICT */
        if ((rc = pop_mark(d, &m)) != 0) break;
        /* Push the empty box, then move it under the items. */
        rc = push_box(d, op == 'l' ? BOX_LIST : BOX_DICT,
                      op == 'l' ? mpx_obj_array(0) : mpx_obj_map(0), empty);
        if (rc != 0) break;
        {
          val_t bv = d->st[d->top - 1];
          memmove(&d->st[m + 1], &d->st[m], (d->top - 1 - m) * sizeof bv);
          d->st[m] = bv;
          rc = op == 'l' ? extend(d, bv.b, m + 1) : set_items(d, bv.b, m + 1);
        }
        break;
      case 'a': /* APPEND */
        if ((rc = need_stack(d, 2)) != 0) break;
        if ((b = target(d, d->top - 2, BOX_LIST)) == NULL)
          rc = target_err(d, d->top - 2, "a list");
        else
          rc = extend(d, b, d->top - 1);
        break;
      case 's': /* SETITEM */
        if ((rc = need_stack(d, 3)) != 0) break;
        if ((b = target(d, d->top - 3, BOX_DICT)) == NULL)
          rc = target_err(d, d->top - 3, "a dict");
        else
          rc = set_items(d, b, d->top - 2);
        break;
      case 'e': /* APPENDS */
      case 'u': /* SETITEMS */
      case 0x90: { /* ADDITEMS */
        int kind = op == 'e' ? BOX_LIST : op == 'u' ? BOX_DICT : BOX_SET;
        if ((rc = pop_mark(d, &m)) != 0) break;
        if (m == 0 || m - 1 < fence(d)) {
          rc = fail(d, "stack underflow at %s", opname(op));
          break;
        }
        if ((b = target(d, m - 1, kind)) == NULL)
          rc = target_err(d, m - 1, kind == BOX_LIST   ? "a list"
                                    : kind == BOX_DICT ? "a dict"
                                                       : "a set");
        else
          rc = kind == BOX_DICT ? set_items(d, b, m) : extend(d, b, m);
        break;
      }
      case 0x91: { /* FROZENSET: MARK items FROZENSET */
        meta_t mo;
        if ((rc = pop_mark(d, &m)) != 0) break;
        if ((rc = push_box(d, BOX_SET, mpx_obj_array(0), empty_set)) != 0)
          break;
        {
          val_t bv = d->st[d->top - 1];
          memmove(&d->st[m + 1], &d->st[m], (d->top - 1 - m) * sizeof bv);
          d->st[m] = bv;
          if ((rc = extend(d, bv.b, m + 1)) != 0) break;
          /* A set box seals into builtins.set: make the frozenset here. */
          mo = bv.b->m;
          mpx_obj_t *items = bv.b->c, *args, *fs;
          bv.b->c = NULL;
          box_unref(bv.b);
          d->top--;
          mo.bytes = sat_add(mo.bytes, sizeof "builtinsfrozenset" - 1);
          args = mpx_obj_tuple(1);
          if (args == NULL) {
            mpx_obj_release(items);
            rc = nomem(d);
            break;
          }
          if (mpx_obj_append(args, items) != 0) {
            mpx_obj_release(args);
            rc = nomem(d);
            break;
          }
          if ((rc = check_meta(d, &mo)) != 0) {
            mpx_obj_release(args);
            break;
          }
          fs = mpx_obj_opaque(MPX_OPAQUE_REDUCE, "builtins", "frozenset", args,
                              NULL);
          rc = push_obj(d, fs, mo);
        }
        break;
      }
      case 'c': rc = load_text_global(d); break;
      case 0x93: rc = load_stack_global(d); break;
      case 'R': rc = load_call(d, MPX_OPAQUE_REDUCE); break;
      case 0x81: rc = load_call(d, MPX_OPAQUE_NEWOBJ); break;
      case 0x92: { /* NEWOBJ_EX: cls args kwargs */
        val_t *kv;
        if ((rc = need_stack(d, 3)) != 0) break;
        kv = &d->st[d->top - 1];
        if (kv->b == NULL || kv->b->kind != BOX_DICT ||
            mpx_obj_len(kv->b->c != NULL ? kv->b->c : kv->b->done) != 0) {
          rc = fail(d, "NEWOBJ_EX: keyword arguments are not supported");
          break;
        }
        val_release(kv);
        d->top--;
        rc = load_call(d, MPX_OPAQUE_NEWOBJ);
        break;
      }
      case 'b': rc = load_build(d); break;
      case 0x97:
      case 0x98:
        rc = fail(d, "%s: out-of-band buffers are not supported", opname(op));
        break;
      default:
        if (op_names[op] != NULL)
          rc = fail(d, "unsupported opcode %s (0x%02x)", op_names[op], op);
        else
          rc = fail(d, "unknown opcode 0x%02x", op);
        break;
    }
    if (rc != 0) return rc;
  }
}

static int pk_decode(const void *data, size_t len, const mpx_decode_opts_t *opts,
                     mpx_obj_t **out, mpx_codec_error_t *err) {
  mpx_codec_error_t dummy;
  dec_t d;
  int rc;
  memset(&d, 0, sizeof d);
  d.p = data;
  d.n = len;
  d.err = err != NULL ? err : &dummy;
  mpx_decode_opts_t lim = mpx_decode_limits(opts);
  d.max_depth = lim.max_depth;
  d.max_items = lim.max_items;
  d.max_bytes = lim.max_bytes;
  d.borrow = opts && (opts->flags & MPX_DECODE_BORROW);
  *out = NULL;
  if (len == 0) {
    d.err->offset = 0;
    snprintf(d.err->msg, sizeof d.err->msg, "empty input");
    return MPX_ECODEC;
  }
  rc = run(&d, out);
  for (size_t i = 0; i < d.top; i++) val_release(&d.st[i]);
  for (size_t i = 0; i < d.memo_len; i++) val_release(&d.memo[i]);
  free(d.st);
  free(d.marks);
  free(d.memo);
  return rc;
}

/* ---- encoder ------------------------------------------------------------- */

typedef struct {
  mpx_wbuf_t *w;
  int proto;
  mpx_codec_error_t *err;
} enc_t;

static int efail(enc_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int efail(enc_t *e, const char *fmt, ...) {
  va_list ap;
  e->err->offset = SIZE_MAX;
  va_start(ap, fmt);
  vsnprintf(e->err->msg, sizeof e->err->msg, fmt, ap);
  va_end(ap);
  return MPX_ECODEC;
}

static int put(enc_t *e, const void *p, size_t n) {
  return mpx_wbuf_append(e->w, p, n);
}

static int put1(enc_t *e, uint8_t b) { return put(e, &b, 1); }

/* An opcode and a little-endian argument of w bytes. */
static int put_op(enc_t *e, uint8_t op, unsigned w, uint64_t v) {
  uint8_t b[9];
  b[0] = op;
  for (unsigned i = 0; i < w; i++) b[1 + i] = (uint8_t)(v >> (8 * i));
  return put(e, b, 1 + w);
}

static int put_str(enc_t *e, const char *s, size_t n) {
  int rc;
  if (e->proto >= 4 && n < 256)
    rc = put_op(e, 0x8c, 1, n);
  else if (n <= UINT32_MAX)
    rc = put_op(e, 'X', 4, n);
  else if (e->proto >= 4)
    rc = put_op(e, 0x8d, 8, n);
  else
    return efail(e, "str of %zu bytes needs protocol 4", n);
  return rc ? rc : put(e, s, n);
}

static int put_bytes(enc_t *e, const uint8_t *p, size_t n) {
  int rc;
  if (e->proto < 3) {
    /* _codecs.encode(p as a Latin-1 str, 'latin1'), as CPython writes. */
    size_t u = n;
    for (size_t i = 0; i < n; i++) u += p[i] >> 7;
    if (u > UINT32_MAX) return efail(e, "bytes of %zu bytes need protocol 3", n);
    if ((rc = put(e, "c_codecs\nencode\n", 16)) != 0 ||
        (rc = put_op(e, 'X', 4, u)) != 0 ||
        (rc = mpx_wbuf_reserve(e->w, u)) != 0)
      return rc;
    for (size_t i = 0; i < n; i++) {
      uint8_t *q = e->w->data + e->w->len;
      if (p[i] < 0x80) {
        q[0] = p[i];
        e->w->len += 1;
      } else {
        q[0] = (uint8_t)(0xC0 | (p[i] >> 6));
        q[1] = (uint8_t)(0x80 | (p[i] & 0x3F));
        e->w->len += 2;
      }
    }
    if ((rc = put_op(e, 'X', 4, 6)) != 0 || (rc = put(e, "latin1", 6)) != 0)
      return rc;
    return put(e, "\x86R", 2);
  }
  if (n < 256)
    rc = put_op(e, 'C', 1, n);
  else if (n <= UINT32_MAX)
    rc = put_op(e, 'B', 4, n);
  else if (e->proto >= 4)
    rc = put_op(e, 0x8e, 8, n);
  else
    return efail(e, "bytes of %zu bytes need protocol 4", n);
  return rc ? rc : put(e, p, n);
}

static int put_int(enc_t *e, int64_t v) {
  uint8_t b[8];
  unsigned n = 1;
  if (v >= 0 && v < 256) return put_op(e, 'K', 1, (uint64_t)v);
  if (v >= 0 && v < 65536) return put_op(e, 'M', 2, (uint64_t)v);
  if (v >= INT32_MIN && v <= INT32_MAX) return put_op(e, 'J', 4, (uint32_t)v);
  /* LONG1: the fewest two's-complement bytes that keep the sign. */
  for (unsigned i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)v >> (8 * i));
  n = 8;
  while (n > 1 && ((b[n - 1] == 0 && !(b[n - 2] & 0x80)) ||
                   (b[n - 1] == 0xFF && (b[n - 2] & 0x80))))
    n--;
  int rc = put_op(e, 0x8a, 1, n);
  return rc ? rc : put(e, b, n);
}

static int enc(enc_t *e, const mpx_obj_t *o, unsigned level);

/* Items i..j of a sequence. */
static int enc_items(enc_t *e, const mpx_obj_t *o, size_t i, size_t j,
                     unsigned level) {
  int rc = 0;
  for (; i < j && rc == 0; i++) rc = enc(e, mpx_obj_item(o, i), level);
  return rc;
}

/* Below protocol 3, Python 3 names written as Python 2's, as CPython's
 * pickler does with fix_imports (_compat_pickle's reverse mappings). */
static const char *const py2_exceptions[] = {
    "ArithmeticError", "AssertionError", "AttributeError", "BaseException",
    "BufferError", "BytesWarning", "DeprecationWarning", "EOFError",
    "EnvironmentError", "Exception", "FloatingPointError", "FutureWarning",
    "GeneratorExit", "IOError", "ImportError", "ImportWarning",
    "IndentationError", "IndexError", "KeyError", "KeyboardInterrupt",
    "LookupError", "MemoryError", "NameError", "NotImplementedError",
    "OSError", "OverflowError", "PendingDeprecationWarning", "ReferenceError",
    "RuntimeError", "RuntimeWarning", "StopIteration", "SyntaxError",
    "SyntaxWarning", "SystemError", "SystemExit", "TabError", "TypeError",
    "UnboundLocalError", "UnicodeDecodeError", "UnicodeEncodeError",
    "UnicodeError", "UnicodeTranslateError", "UnicodeWarning", "UserWarning",
    "ValueError", "Warning", "ZeroDivisionError"};
/* Python 3's OSError subclasses: Python 2 has only OSError. */
static const char *const py3_oserrors[] = {
    "BlockingIOError", "BrokenPipeError", "ChildProcessError",
    "ConnectionAbortedError", "ConnectionError", "ConnectionRefusedError",
    "ConnectionResetError", "FileExistsError", "FileNotFoundError",
    "InterruptedError", "IsADirectoryError", "NotADirectoryError",
    "PermissionError", "ProcessLookupError", "TimeoutError"};
static const char *const rev_name_map[][4] = {
    {"builtins", "ModuleNotFoundError", "exceptions", "ImportError"},
    {"builtins", "chr", "__builtin__", "unichr"},
    {"builtins", "int", "__builtin__", "long"},
    {"builtins", "range", "__builtin__", "xrange"},
    {"builtins", "str", "__builtin__", "unicode"},
    {"builtins", "filter", "itertools", "ifilter"},
    {"builtins", "map", "itertools", "imap"},
    {"builtins", "zip", "itertools", "izip"},
    {"functools", "reduce", "__builtin__", "reduce"},
    {"sys", "intern", "__builtin__", "intern"},
    {"collections", "UserDict", "UserDict", "IterableUserDict"},
    {"collections", "UserList", "UserList", "UserList"},
    {"collections", "UserString", "UserString", "UserString"},
    {"multiprocessing.context", "AuthenticationError", "multiprocessing",
     "AuthenticationError"},
    {"multiprocessing.context", "BufferTooShort", "multiprocessing",
     "BufferTooShort"},
    {"multiprocessing.context", "ProcessError", "multiprocessing",
     "ProcessError"},
    {"multiprocessing.context", "TimeoutError", "multiprocessing",
     "TimeoutError"},
    {"multiprocessing.context", "Process", "multiprocessing.process",
     "Process"},
};
static const char *const rev_module_map[][2] = {
    {"builtins", "__builtin__"}, {"copyreg", "copy_reg"}, {"queue", "Queue"},
    {"_thread", "thread"},       {"_pickle", "pickle"},
};

static int in_list(const char *s, const char *const *l, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(s, l[i]) == 0) return 1;
  return 0;
}

static void py2_name(const char **mod, const char **name) {
  size_t i;
  if (strcmp(*mod, "builtins") == 0) {
    if (in_list(*name, py2_exceptions,
                sizeof py2_exceptions / sizeof py2_exceptions[0])) {
      *mod = "exceptions";
      return;
    }
    if (in_list(*name, py3_oserrors,
                sizeof py3_oserrors / sizeof py3_oserrors[0])) {
      *mod = "exceptions";
      *name = "OSError";
      return;
    }
  }
  for (i = 0; i < sizeof rev_name_map / sizeof rev_name_map[0]; i++)
    if (!strcmp(*mod, rev_name_map[i][0]) && !strcmp(*name, rev_name_map[i][1])) {
      *mod = rev_name_map[i][2];
      *name = rev_name_map[i][3];
      return;
    }
  for (i = 0; i < sizeof rev_module_map / sizeof rev_module_map[0]; i++)
    if (!strcmp(*mod, rev_module_map[i][0])) {
      *mod = rev_module_map[i][1];
      return;
    }
}

static int enc_opaque(enc_t *e, const mpx_obj_t *o, unsigned level) {
  const char *mod = mpx_obj_opaque_module(o), *name = mpx_obj_opaque_name(o);
  mpx_opaque_kind_t kind = mpx_obj_opaque_kind(o);
  const mpx_obj_t *args = mpx_obj_opaque_args(o), *state = mpx_obj_opaque_state(o);
  size_t ml, nl;
  int rc;
  if (e->proto < 3) py2_name(&mod, &name);
  ml = strlen(mod);
  nl = strlen(name);
  if (e->proto >= 4) {
    if ((rc = put_str(e, mod, ml)) != 0 || (rc = put_str(e, name, nl)) != 0 ||
        (rc = put1(e, 0x93)) != 0)
      return rc;
  } else {
    if (memchr(mod, '\n', ml) || memchr(name, '\n', nl))
      return efail(e, "a newline in global %s.%s needs protocol 4", mod, name);
    if ((rc = put1(e, 'c')) != 0 || (rc = put(e, mod, ml)) != 0 ||
        (rc = put1(e, '\n')) != 0 || (rc = put(e, name, nl)) != 0 ||
        (rc = put1(e, '\n')) != 0)
      return rc;
  }
  if (kind == MPX_OPAQUE_GLOBAL) {
    if (args != NULL || state != NULL)
      return efail(e, "GLOBAL %s.%s with args or state", mod, name);
    return 0;
  }
  if (kind != MPX_OPAQUE_REDUCE && kind != MPX_OPAQUE_NEWOBJ)
    return efail(e, "opaque %s.%s of unknown kind %d", mod, name, (int)kind);
  if (args == NULL)
    rc = put1(e, ')');
  else if (mpx_obj_type(args) != MPX_OBJ_TUPLE)
    return efail(e, "%s.%s: args must be a tuple, not %s", mod, name,
                 mpx_obj_type_name(mpx_obj_type(args)));
  else
    rc = enc(e, args, level);
  if (rc == 0) rc = put1(e, kind == MPX_OPAQUE_REDUCE ? 'R' : 0x81);
  if (rc == 0 && state != NULL) {
    rc = enc(e, state, level);
    if (rc == 0) rc = put1(e, 'b');
  }
  return rc;
}

/* level: containers around o. */
static int enc(enc_t *e, const mpx_obj_t *o, unsigned level) {
  mpx_obj_type_t t;
  size_t n, i;
  int rc = 0;
  if (o == NULL) return efail(e, "NULL object");
  t = mpx_obj_type(o);
  if (t >= MPX_OBJ_ARRAY && t <= MPX_OBJ_OPAQUE && ++level > ENC_MAX_DEPTH)
    return efail(e, "nesting deeper than %u", ENC_MAX_DEPTH);
  switch (t) {
    case MPX_OBJ_NULL:
      return put1(e, 'N');
    case MPX_OBJ_BOOL:
      return put1(e, mpx_obj_get_bool(o) ? 0x88 : 0x89);
    case MPX_OBJ_INT:
      return put_int(e, mpx_obj_get_int(o));
    case MPX_OBJ_BIGINT: {
      const void *p = mpx_obj_bigint_data(o, &n);
      if (n < 256)
        rc = put_op(e, 0x8a, 1, n);
      else if (n <= INT32_MAX)
        rc = put_op(e, 0x8b, 4, n);
      else
        return efail(e, "integer of %zu bytes is too large", n);
      return rc ? rc : put(e, p, n);
    }
    case MPX_OBJ_FLOAT: {
      union { double f; uint64_t u; } f;
      uint8_t b[9];
      f.f = mpx_obj_get_float(o);
      b[0] = 'G';
      for (i = 0; i < 8; i++) b[1 + i] = (uint8_t)(f.u >> (56 - 8 * i));
      return put(e, b, 9);
    }
    case MPX_OBJ_STR: {
      const char *s = mpx_obj_str_data(o, &n);
      return put_str(e, s, n);
    }
    case MPX_OBJ_BYTES: {
      const void *p = mpx_obj_bytes_data(o, &n);
      return put_bytes(e, p, n);
    }
    case MPX_OBJ_TUPLE:
      n = mpx_obj_len(o);
      if (n == 0) return put1(e, ')');
      if (n <= 3)
        return (rc = enc_items(e, o, 0, n, level)) ? rc : put1(e, (uint8_t)(0x84 + n));
      if ((rc = put1(e, '(')) != 0 || (rc = enc_items(e, o, 0, n, level)) != 0)
        return rc;
      return put1(e, 't');
    case MPX_OBJ_ARRAY:
      n = mpx_obj_len(o);
      if ((rc = put1(e, ']')) != 0) return rc;
      for (i = 0; i < n && rc == 0; i += BATCH) {
        size_t j = n - i < BATCH ? n : i + BATCH;
        if (j - i == 1)
          rc = (rc = enc_items(e, o, i, j, level)) ? rc : put1(e, 'a');
        else if ((rc = put1(e, '(')) == 0 &&
                 (rc = enc_items(e, o, i, j, level)) == 0)
          rc = put1(e, 'e');
      }
      return rc;
    case MPX_OBJ_MAP:
      n = mpx_obj_len(o);
      if ((rc = put1(e, '}')) != 0) return rc;
      for (i = 0; i < n && rc == 0; i += BATCH) {
        size_t j = n - i < BATCH ? n : i + BATCH;
        if (j - i > 1 && (rc = put1(e, '(')) != 0) break;
        for (size_t k = i; k < j && rc == 0; k++)
          if ((rc = enc(e, mpx_obj_map_key(o, k), level)) == 0)
            rc = enc(e, mpx_obj_map_value(o, k), level);
        if (rc == 0) rc = put1(e, j - i > 1 ? 'u' : 's');
      }
      return rc;
    case MPX_OBJ_OPAQUE:
      return enc_opaque(e, o, level);
  }
  return efail(e, "cannot encode %s", mpx_obj_type_name(t));
}

static int pk_encode(const mpx_obj_t *obj, mpx_wbuf_t *out,
                     const mpx_encode_opts_t *opts, mpx_codec_error_t *err) {
  mpx_codec_error_t dummy;
  enc_t e;
  size_t start = out->len;
  uint8_t hdr[2];
  int rc;
  e.w = out;
  e.err = err != NULL ? err : &dummy;
  e.proto = opts != NULL && opts->protocol != 0 ? opts->protocol : 4;
  if (e.proto < 2 || e.proto > 5)
    return efail(&e, "unsupported protocol %d (2 to 5)", e.proto);
  hdr[0] = 0x80;
  hdr[1] = (uint8_t)e.proto;
  if ((rc = put(&e, hdr, 2)) == 0 && (rc = enc(&e, obj, 0)) == 0)
    rc = put1(&e, '.');
  if (rc != 0) {
    out->len = start; /* no half-written pickle */
    if (rc != MPX_ECODEC) {
      e.err->offset = SIZE_MAX;
      snprintf(e.err->msg, sizeof e.err->msg, "%s",
               rc == MPX_ENOBUFS ? "output buffer too small" : "out of memory");
    }
  }
  return rc;
}

MPX_CODEC_EXPORT const mpx_codec_t mpx_codec_descriptor = {
    MPX_CODEC_HEADER,
    "pickle",
    "application/x-python-pickle",
    "Python pickle, protocols 2-5: the subset multiprocessing sends "
    "(objects become opaque nodes, nothing is executed)",
    pk_encode,
    pk_decode,
    NULL,
    NULL};
