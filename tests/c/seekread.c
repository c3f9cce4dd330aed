/*
 * seekread: read slices of a file the way legacy C/Fortran codes do, for the mount tests.
 *
 *   seekread MODE PATH OFFSET LENGTH [OFFSET LENGTH ...]
 *
 * MODE is one of
 *   lseek  open once, then for each slice lseek(SEEK_SET) and read() until LENGTH or EOF;
 *          between slices it also checks lseek(SEEK_CUR) and lseek(SEEK_END) answers;
 *   pread  open once, pread() each slice;
 *   mmap   mmap the whole file read-only and copy each slice out of the mapping.
 *
 * The bytes of every slice are written to stdout, one after the other (a slice that runs
 * past EOF is cut at EOF, as read() does). Any failing call prints "seekread: CALL: ERROR"
 * to stderr and exits with status 1, so the test sees the errno text.
 */
#define _FILE_OFFSET_BITS 64
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static void die(const char *call)
{
    fprintf(stderr, "seekread: %s: %s\n", call, strerror(errno));
    exit(1);
}

static void write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDOUT_FILENO, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("write(stdout)");
        }
        buf += n;
        len -= (size_t)n;
    }
}

static void mismatch(const char *what)
{
    fprintf(stderr, "seekread: %s\n", what);
    exit(1);
}

static long long parse_number(const char *text)
{
    char *end = NULL;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < 0) {
        fprintf(stderr, "seekread: not a non-negative number: %s\n", text);
        exit(2);
    }
    return value;
}

/* Read up to len bytes at the current offset, looping over short reads; return bytes read. */
static size_t read_full(int fd, char *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = read(fd, buf + done, len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("read");
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return done;
}

static size_t pread_full(int fd, char *buf, size_t len, off_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, buf + done, len - done, off + (off_t)done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("pread");
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return done;
}

static void slices_by_lseek(int fd, off_t size, int count, char **pairs)
{
    for (int i = 0; i < count; i++) {
        off_t off = (off_t)parse_number(pairs[2 * i]);
        size_t len = (size_t)parse_number(pairs[2 * i + 1]);
        if (lseek(fd, off, SEEK_SET) != off)
            die("lseek(SEEK_SET)");
        char *buf = malloc(len ? len : 1);
        if (buf == NULL)
            die("malloc");
        size_t got = read_full(fd, buf, len);
        if (lseek(fd, 0, SEEK_CUR) != off + (off_t)got)
            mismatch("lseek(SEEK_CUR) disagrees with the bytes read");
        write_all(buf, got);
        free(buf);
        if (lseek(fd, 0, SEEK_END) != size)
            mismatch("lseek(SEEK_END) disagrees with fstat");
    }
}

static void slices_by_pread(int fd, int count, char **pairs)
{
    for (int i = 0; i < count; i++) {
        off_t off = (off_t)parse_number(pairs[2 * i]);
        size_t len = (size_t)parse_number(pairs[2 * i + 1]);
        char *buf = malloc(len ? len : 1);
        if (buf == NULL)
            die("malloc");
        write_all(buf, pread_full(fd, buf, len, off));
        free(buf);
    }
}

static void slices_by_mmap(int fd, off_t size, int count, char **pairs)
{
    if (size == 0)
        return; /* nothing to map; every slice is empty */
    const char *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED)
        die("mmap");
    for (int i = 0; i < count; i++) {
        off_t off = (off_t)parse_number(pairs[2 * i]);
        off_t len = (off_t)parse_number(pairs[2 * i + 1]);
        if (off >= size)
            continue;
        if (len > size - off)
            len = size - off;
        write_all(map + off, (size_t)len);
    }
    if (munmap((void *)map, (size_t)size) != 0)
        die("munmap");
}

int main(int argc, char **argv)
{
    if (argc < 5 || (argc - 3) % 2 != 0) {
        fprintf(stderr, "usage: seekread lseek|pread|mmap PATH OFFSET LENGTH [OFFSET LENGTH ...]\n");
        return 2;
    }
    const char *mode = argv[1];
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0)
        die("open");
    struct stat st;
    if (fstat(fd, &st) != 0)
        die("fstat");
    int count = (argc - 3) / 2;
    char **pairs = argv + 3;
    if (strcmp(mode, "lseek") == 0)
        slices_by_lseek(fd, st.st_size, count, pairs);
    else if (strcmp(mode, "pread") == 0)
        slices_by_pread(fd, count, pairs);
    else if (strcmp(mode, "mmap") == 0)
        slices_by_mmap(fd, st.st_size, count, pairs);
    else {
        fprintf(stderr, "seekread: unknown mode %s\n", mode);
        return 2;
    }
    if (close(fd) != 0)
        die("close");
    return 0;
}
