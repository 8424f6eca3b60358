/* The ELF check before dlopen (elf_check.h). Only the headers are read:
 * the ELF header, the program header table and the section header
 * table's place; what they point at is only compared with the file's
 * size. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "elf_check.h"
#include "internal.h"

#if UINTPTR_MAX > 0xffffffffu
#define OUR_CLASS ELFCLASS64
typedef Elf64_Ehdr ehdr_t;
typedef Elf64_Phdr phdr_t;
typedef Elf64_Shdr shdr_t;
#else
#define OUR_CLASS ELFCLASS32
typedef Elf32_Ehdr ehdr_t;
typedef Elf32_Phdr phdr_t;
typedef Elf32_Shdr shdr_t;
#endif

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define OUR_DATA ELFDATA2LSB
#else
#define OUR_DATA ELFDATA2MSB
#endif

/* This build's e_machine; 0 where unknown (dlopen then judges). */
#if defined(__x86_64__)
#define OUR_MACHINE EM_X86_64
#elif defined(__i386__)
#define OUR_MACHINE EM_386
#elif defined(__aarch64__)
#define OUR_MACHINE EM_AARCH64
#elif defined(__arm__)
#define OUR_MACHINE EM_ARM
#elif defined(__riscv)
#define OUR_MACHINE EM_RISCV
#elif defined(__powerpc64__)
#define OUR_MACHINE EM_PPC64
#elif defined(__s390x__)
#define OUR_MACHINE EM_S390
#elif defined(__loongarch__)
#define OUR_MACHINE 258 /* EM_LOONGARCH */
#else
#define OUR_MACHINE 0
#endif

#define MAX_PHDRS 4096

static const char *seg_name(uint32_t type) {
  switch (type) {
  case PT_LOAD: return "LOAD";
  case PT_DYNAMIC: return "DYNAMIC";
  case PT_INTERP: return "INTERP";
  case PT_NOTE: return "NOTE";
  case PT_TLS: return "TLS";
  case PT_GNU_EH_FRAME: return "GNU_EH_FRAME";
  case PT_GNU_RELRO: return "GNU_RELRO";
  case PT_GNU_PROPERTY: return "GNU_PROPERTY";
  default: return "other";
  }
}

/* Reads n bytes at off; 0, or -1 when the file ends first. */
static int read_at(int fd, void *buf, size_t n, off_t off) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = pread(fd, (char *)buf + got, n - got, off + (off_t)got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

/* A table of n entries of size each at off inside a file of fsize bytes. */
static int table_fits(uint64_t off, uint64_t n, uint64_t size, uint64_t fsize,
                      uint64_t *end) {
  *end = off + n * size;
  return off <= fsize && n * size <= fsize - off;
}

/* The ELF header's fields; why is filled when they are wrong. */
static int check_ehdr(const ehdr_t *h, char *why, size_t cap) {
  if (memcmp(h->e_ident, ELFMAG, SELFMAG) != 0)
    snprintf(why, cap, "not an ELF file (no ELF magic)");
  else if (h->e_ident[EI_CLASS] != OUR_CLASS)
    snprintf(why, cap, "ELF class %u, this build loads %u-bit objects",
             h->e_ident[EI_CLASS], OUR_CLASS == ELFCLASS64 ? 64 : 32);
  else if (h->e_ident[EI_DATA] != OUR_DATA)
    snprintf(why, cap, "byte order %s, not this machine's",
             h->e_ident[EI_DATA] == ELFDATA2LSB ? "little-endian" : "big-endian");
  else if (OUR_MACHINE != 0 && h->e_machine != OUR_MACHINE)
    snprintf(why, cap, "built for ELF machine %u, this is %u", h->e_machine,
             (unsigned)OUR_MACHINE);
  else if (h->e_type != ET_DYN)
    snprintf(why, cap, "ELF type %u, not a shared object (ET_DYN)", h->e_type);
  else if (h->e_phnum == 0 || h->e_phnum > MAX_PHDRS ||
           h->e_phentsize != sizeof(phdr_t))
    snprintf(why, cap, "%u program headers of %u bytes: not a loadable object",
             h->e_phnum, h->e_phentsize);
  else
    return 0;
  return -1;
}

/* Every segment's bytes, and the section header table, inside the file. */
static int check_tables(int fd, const ehdr_t *h, uint64_t fsize, char *why,
                        size_t cap) {
  uint64_t end;
  if (!table_fits(h->e_phoff, h->e_phnum, sizeof(phdr_t), fsize, &end)) {
    snprintf(why, cap, "truncated: the program headers end at byte %llu, the "
             "file has %llu bytes", (unsigned long long)end,
             (unsigned long long)fsize);
    return -1;
  }
  phdr_t *ph = malloc((size_t)h->e_phnum * sizeof *ph);
  if (ph == NULL || read_at(fd, ph, (size_t)h->e_phnum * sizeof *ph,
                            (off_t)h->e_phoff) != 0) {
    snprintf(why, cap, ph ? "cannot read the program headers" : "out of memory");
    free(ph);
    return -1;
  }
  int rc = 0;
  for (unsigned i = 0; i < h->e_phnum && rc == 0; i++) {
    if (ph[i].p_filesz == 0) continue;
    if (!table_fits(ph[i].p_offset, 1, ph[i].p_filesz, fsize, &end)) {
      snprintf(why, cap, "truncated: segment %u (%s) ends at byte %llu, the "
               "file has %llu bytes", i, seg_name(ph[i].p_type),
               (unsigned long long)end, (unsigned long long)fsize);
      rc = -1;
    }
  }
  free(ph);
  if (rc == 0 && h->e_shoff != 0 &&
      !table_fits(h->e_shoff, h->e_shnum, h->e_shentsize, fsize, &end)) {
    snprintf(why, cap, "truncated: the section headers end at byte %llu, the "
             "file has %llu bytes", (unsigned long long)end,
             (unsigned long long)fsize);
    rc = -1;
  }
  return rc;
}

int mpx__elf_check(const char *what, const char *path) {
  char why[256];
  struct stat st;
  ehdr_t h;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return mpx__err_errno("cannot load %s '%s'", what, path);
  if (fstat(fd, &st) != 0) {
    int rc = mpx__err_errno("cannot load %s '%s'", what, path);
    close(fd);
    return rc;
  }
  int bad = 0;
  if (!S_ISREG(st.st_mode)) {
    snprintf(why, sizeof why, "not a regular file");
    bad = 1;
  } else if ((uint64_t)st.st_size < sizeof h) {
    if (st.st_size >= SELFMAG && read_at(fd, &h, SELFMAG, 0) == 0 &&
        memcmp(h.e_ident, ELFMAG, SELFMAG) == 0)
      snprintf(why, sizeof why, "truncated: %lld bytes, the ELF header alone "
               "is %zu", (long long)st.st_size, sizeof h);
    else
      snprintf(why, sizeof why, st.st_size ? "not an ELF file (%lld bytes)"
                                           : "empty file (%lld bytes)",
               (long long)st.st_size);
    bad = 1;
  } else if (read_at(fd, &h, sizeof h, 0) != 0) {
    snprintf(why, sizeof why, "cannot read its ELF header");
    bad = 1;
  } else {
    bad = check_ehdr(&h, why, sizeof why) != 0 ||
          check_tables(fd, &h, (uint64_t)st.st_size, why, sizeof why) != 0;
  }
  close(fd);
  if (bad) return mpx__err(MPX_EPLUGIN, "cannot load %s '%s': %s", what, path, why);
  return 0;
}
