/* Batches of small-file system calls made with the GIL released once per batch.
 *
 * A fetch of many small files costs the receiver an open, a write and a close per
 * file, then a rename and an lstat, and a page-cache drop after the batch's
 * writeback; the sender an open, a
 * read-ahead hint and a close, then an open, a read and a close. Made from Python, every
 * one of those calls gives the GIL up and waits to take it back: beside a busy
 * Python thread, a writer thread did 660 files/s that way and 4,500-6,000 files/s
 * with batches of 128 here (bench/gil_files.py, AMD EPYC, 2 vCPUs). Only plain
 * system calls are made here: what to write, where, and what an error means stay
 * in Python.
 */
#define PY_SSIZE_T_CLEAN
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

#define NEW_FILE_FLAGS (O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC)
/* The most one pwrite takes: larger writes cost the kernel more per byte (writes.py). */
#define WRITE_PIECE ((Py_ssize_t)1 << 20)

/* Uncached buffered reads (Linux 6.14, <linux/fs.h>; glibc's headers may not name it
 * yet): the bytes go through the page cache, but pages this call brings in leave it
 * once read, and pages that were cached before stay. See writes.py for why a sender
 * wants it. A kernel or file system without it refuses the flag (EOPNOTSUPP, or
 * EINVAL) before touching the file, and the call is made again without it. */
#ifdef __linux__
#ifndef RWF_DONTCACHE
#define RWF_DONTCACHE 0x00000080
#endif
#define DROP_BEHIND RWF_DONTCACHE
#else
#define DROP_BEHIND 0
#endif

static int
refused_flag(int err)
{
    return err == EOPNOTSUPP || err == EINVAL;
}

/* A pread whose pages leave the cache after it, where the kernel can; *uncached says
 * whether to try, and is cleared when the file refuses it. */
static ssize_t
read_behind(int fd, char *data, size_t size, off_t offset, int *uncached)
{
#if DROP_BEHIND
    if (*uncached) {
        struct iovec piece = {data, size};
        ssize_t n = preadv2(fd, &piece, 1, offset, DROP_BEHIND);
        if (n >= 0 || !refused_flag(errno))
            return n;
        *uncached = 0;
    }
#else
    (void)uncached;
#endif
    return pread(fd, data, size, offset);
}

/* A small file, written whole with plain (cached) writes and no writeback started:
 * the fetch flushes such files in the background many at a time, then drops their
 * pages (drop_cached), which costs the kernel less than a writeback per file. */
static int
write_whole(const char *path, int mode, const char *data, Py_ssize_t size)
{
    int fd = open(path, NEW_FILE_FLAGS, mode);
    if (fd < 0)
        return errno;
    int err = 0;
    Py_ssize_t done = 0;
    while (done < size) {
        Py_ssize_t want = size - done < WRITE_PIECE ? size - done : WRITE_PIECE;
        ssize_t n = pwrite(fd, data + done, (size_t)want, (off_t)done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            err = errno;
            break;
        }
        if (n == 0) {
            /* No progress and no error: stop rather than spin. */
            err = EIO;
            break;
        }
        done += n;
    }
    if (close(fd) != 0 && !err && errno != EINTR)
        err = errno;
    return err;
}

static void
release_all(PyObject **paths, Py_buffer *views, Py_ssize_t count)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_XDECREF(paths[i]);
        if (views[i].obj != NULL)
            PyBuffer_Release(&views[i]);
    }
}

PyDoc_STRVAR(write_new_doc,
"write_new(files) -> list of errno values\n\n"
"files: a list of (path, mode, data). Each file is created (O_CREAT | O_TRUNC |\n"
"O_NOFOLLOW) with `mode`, `data` written whole with plain writes (its writeback and\n"
"its pages' leaving the cache are the caller's: drop_cached) and the file closed,\n"
"all with the GIL released once. An item's errno is 0 when it was written.");

static PyObject *
write_new(PyObject *self, PyObject *arg)
{
    (void)self;
    PyObject *seq = PySequence_Fast(arg, "write_new takes a list of (path, mode, data)");
    if (seq == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **paths = PyMem_Calloc((size_t)count + 1, sizeof(PyObject *));
    Py_buffer *views = PyMem_Calloc((size_t)count + 1, sizeof(Py_buffer));
    int *modes = PyMem_Calloc((size_t)count + 1, sizeof(int));
    int *errs = PyMem_Calloc((size_t)count + 1, sizeof(int));
    PyObject *result = NULL;
    Py_ssize_t ready = 0;
    if (paths == NULL || views == NULL || modes == NULL || errs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; ready < count; ready++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, ready);
        PyObject *path;
        if (!PyArg_ParseTuple(item, "Oiy*;write_new: each item is (path, mode, data)", &path, &modes[ready],
                              &views[ready]))
            goto done;
        if (!PyUnicode_FSConverter(path, &paths[ready]))
            goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++)
        errs[i] = write_whole(PyBytes_AS_STRING(paths[i]), modes[i], views[i].buf, views[i].len);
    Py_END_ALLOW_THREADS
    result = PyList_New(count);
    if (result == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *err = PyLong_FromLong(errs[i]);
        if (err == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, err);
    }
done:
    if (paths != NULL && views != NULL)
        release_all(paths, views, ready < count ? ready + 1 : count);
    PyMem_Free(paths);
    PyMem_Free(views);
    PyMem_Free(modes);
    PyMem_Free(errs);
    Py_DECREF(seq);
    return result;
}

struct moved {
    int err;
    struct stat st;
};

static long long
nanoseconds(time_t sec, long nsec)
{
    return (long long)sec * 1000000000LL + nsec;
}

PyDoc_STRVAR(replace_doc,
"replace(moves) -> list of (errno, size, mtime_ns, ctime_ns, inode)\n\n"
"moves: a list of (source, target). Each source is renamed over its target and the\n"
"target lstat'ed, all with the GIL released once. An item's errno is 0 when both\n"
"succeeded; otherwise it is the rename's or the lstat's errno and the rest is 0.");

static PyObject *
replace(PyObject *self, PyObject *arg)
{
    (void)self;
    PyObject *seq = PySequence_Fast(arg, "replace takes a list of (source, target)");
    if (seq == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **paths = PyMem_Calloc(2 * (size_t)count + 2, sizeof(PyObject *));
    struct moved *out = PyMem_Calloc((size_t)count + 1, sizeof(struct moved));
    PyObject *result = NULL;
    Py_ssize_t ready = 0;
    if (paths == NULL || out == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; ready < count; ready++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, ready);
        if (!PyArg_ParseTuple(item, "O&O&;replace: each item is (source, target)", PyUnicode_FSConverter,
                              &paths[2 * ready], PyUnicode_FSConverter, &paths[2 * ready + 1]))
            goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        const char *target = PyBytes_AS_STRING(paths[2 * i + 1]);
        if (rename(PyBytes_AS_STRING(paths[2 * i]), target) != 0 || lstat(target, &out[i].st) != 0)
            out[i].err = errno;
    }
    Py_END_ALLOW_THREADS
    result = PyList_New(count);
    if (result == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        const struct stat *st = &out[i].st;
        PyObject *row;
        if (out[i].err)
            row = Py_BuildValue("(iiiii)", out[i].err, 0, 0, 0, 0);
        else
#ifdef __APPLE__
            row = Py_BuildValue("(iLLLK)", 0, (long long)st->st_size,
                                nanoseconds(st->st_mtimespec.tv_sec, st->st_mtimespec.tv_nsec),
                                nanoseconds(st->st_ctimespec.tv_sec, st->st_ctimespec.tv_nsec),
                                (unsigned long long)st->st_ino);
#else
            row = Py_BuildValue("(iLLLK)", 0, (long long)st->st_size, nanoseconds(st->st_mtim.tv_sec, st->st_mtim.tv_nsec),
                                nanoseconds(st->st_ctim.tv_sec, st->st_ctim.tv_nsec), (unsigned long long)st->st_ino);
#endif
        if (row == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, row);
    }
done:
    if (paths != NULL)
        for (Py_ssize_t i = 0; i < 2 * count; i++)
            Py_XDECREF(paths[i]);
    PyMem_Free(paths);
    PyMem_Free(out);
    Py_DECREF(seq);
    return result;
}

/* The descriptor of `path`, opened for reading, reusing `*fd` when `*open_path` is the same
 * path (consecutive runs of one large file); -1 with errno set if it cannot be opened. */
static int
open_for_reading(const char *path, int *fd, const char **open_path)
{
    if (*fd >= 0 && strcmp(path, *open_path) == 0)
        return *fd;
    if (*fd >= 0)
        close(*fd);
    *open_path = path;
    *fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    return *fd;
}

PyDoc_STRVAR(will_need_doc,
"will_need(extents) -> None\n\n"
"extents: a list of (path, offset, length). The kernel is asked to start reading\n"
"each (posix_fadvise WILLNEED), so that the reads of many small files overlap on a\n"
"cold disk. Best effort: a file that cannot be opened is skipped.");

static PyObject *
will_need(PyObject *self, PyObject *arg)
{
    (void)self;
    PyObject *seq = PySequence_Fast(arg, "will_need takes a list of (path, offset, length)");
    if (seq == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **paths = PyMem_Calloc((size_t)count + 1, sizeof(PyObject *));
    long long *offsets = PyMem_Calloc((size_t)count + 1, sizeof(long long));
    long long *lengths = PyMem_Calloc((size_t)count + 1, sizeof(long long));
    PyObject *result = NULL;
    if (paths == NULL || offsets == NULL || lengths == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++)
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "O&LL;will_need: each item is (path, offset, length)",
                              PyUnicode_FSConverter, &paths[i], &offsets[i], &lengths[i]))
            goto done;
    Py_BEGIN_ALLOW_THREADS
    int fd = -1;
    const char *open_path = NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (open_for_reading(PyBytes_AS_STRING(paths[i]), &fd, &open_path) < 0)
            continue;
#ifdef POSIX_FADV_WILLNEED
        (void)posix_fadvise(fd, (off_t)offsets[i], (off_t)lengths[i], POSIX_FADV_WILLNEED);
#endif
    }
    if (fd >= 0)
        close(fd);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    if (paths != NULL)
        for (Py_ssize_t i = 0; i < count; i++)
            Py_XDECREF(paths[i]);
    PyMem_Free(paths);
    PyMem_Free(offsets);
    PyMem_Free(lengths);
    Py_DECREF(seq);
    return result;
}

PyDoc_STRVAR(drop_cached_doc,
"drop_cached(files) -> int\n\n"
"files: a list of tuples of paths, each the places one file may be. The first of them\n"
"that opens (O_NOFOLLOW) has its clean pages dropped from the cache (posix_fadvise\n"
"DONTNEED; pages still dirty stay), all with the GIL released once. Best effort: a\n"
"file at none of its places is skipped. Returns the number of files found.");

static PyObject *
drop_cached(PyObject *self, PyObject *arg)
{
    (void)self;
    PyObject *seq = PySequence_Fast(arg, "drop_cached takes a list of tuples of paths");
    if (seq == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **places = PyMem_Calloc((size_t)count + 1, sizeof(PyObject *));
    PyObject *result = NULL;
    Py_ssize_t ready = 0;
    long found = 0;
    if (places == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; ready < count; ready++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, ready);
        if (!PyTuple_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "drop_cached: each item is a tuple of paths");
            goto done;
        }
        Py_ssize_t n = PyTuple_GET_SIZE(item);
        places[ready] = PyTuple_New(n);
        if (places[ready] == NULL)
            goto done;
        for (Py_ssize_t j = 0; j < n; j++) {
            PyObject *converted = NULL;
            if (!PyUnicode_FSConverter(PyTuple_GET_ITEM(item, j), &converted))
                goto done;
            PyTuple_SET_ITEM(places[ready], j, converted);
        }
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(places[i]); j++) {
            int fd = open(PyBytes_AS_STRING(PyTuple_GET_ITEM(places[i], j)), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0)
                continue;
#ifdef POSIX_FADV_DONTNEED
            (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
#endif
            close(fd);
            found++;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    result = PyLong_FromLong(found);
done:
    if (places != NULL)
        for (Py_ssize_t i = 0; i <= ready && i < count; i++)
            Py_XDECREF(places[i]);
    PyMem_Free(places);
    Py_DECREF(seq);
    return result;
}

PyDoc_STRVAR(read_into_doc,
"read_into(reads) -> list of byte counts\n\n"
"reads: a list of (path, offset, buffer). Each buffer is filled from its file at\n"
"`offset` (opened O_NOFOLLOW; consecutive reads of one path share a descriptor), all\n"
"with the GIL released once; pages the reads bring into the cache leave it after them\n"
"(RWF_DONTCACHE, where the kernel has it). An item's count is the bytes read (short at the end of\n"
"the file), or minus the errno when the file could not be opened or read.");

static PyObject *
read_into(PyObject *self, PyObject *arg)
{
    (void)self;
    PyObject *seq = PySequence_Fast(arg, "read_into takes a list of (path, offset, buffer)");
    if (seq == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    PyObject **paths = PyMem_Calloc((size_t)count + 1, sizeof(PyObject *));
    Py_buffer *views = PyMem_Calloc((size_t)count + 1, sizeof(Py_buffer));
    long long *offsets = PyMem_Calloc((size_t)count + 1, sizeof(long long));
    Py_ssize_t *got = PyMem_Calloc((size_t)count + 1, sizeof(Py_ssize_t));
    PyObject *result = NULL;
    Py_ssize_t ready = 0;
    if (paths == NULL || views == NULL || offsets == NULL || got == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; ready < count; ready++)
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, ready), "O&Lw*;read_into: each item is (path, offset, buffer)",
                              PyUnicode_FSConverter, &paths[ready], &offsets[ready], &views[ready]))
            goto done;
    Py_BEGIN_ALLOW_THREADS
    int fd = -1;
    const char *open_path = NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (open_for_reading(PyBytes_AS_STRING(paths[i]), &fd, &open_path) < 0) {
            got[i] = -errno;
            continue;
        }
        Py_ssize_t done_bytes = 0;
        int uncached = 1;
        while (done_bytes < views[i].len) {
            ssize_t n = read_behind(fd, (char *)views[i].buf + done_bytes, (size_t)(views[i].len - done_bytes),
                                    (off_t)(offsets[i] + done_bytes), &uncached);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                done_bytes = -errno;
                break;
            }
            if (n == 0)
                break;
            done_bytes += n;
        }
        got[i] = done_bytes;
    }
    if (fd >= 0)
        close(fd);
    Py_END_ALLOW_THREADS
    result = PyList_New(count);
    if (result == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *n = PyLong_FromSsize_t(got[i]);
        if (n == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, n);
    }
done:
    if (paths != NULL && views != NULL)
        release_all(paths, views, ready < count ? ready + 1 : count);
    PyMem_Free(paths);
    PyMem_Free(views);
    PyMem_Free(offsets);
    PyMem_Free(got);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef methods[] = {
    {"write_new", write_new, METH_O, write_new_doc},
    {"replace", replace, METH_O, replace_doc},
    {"will_need", will_need, METH_O, will_need_doc},
    {"read_into", read_into, METH_O, read_into_doc},
    {"drop_cached", drop_cached, METH_O, drop_cached_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_filebatch", "Small-file system calls in batches, with the GIL released once a batch.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__filebatch(void)
{
    return PyModule_Create(&module);
}
