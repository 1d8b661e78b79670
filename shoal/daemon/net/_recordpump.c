/* The receiving side of a large frame, off the event loop: read the socket and open
 * its AES-256-GCM records (SPEC "Records") straight into the frame's buffer, with
 * the GIL released for the whole call.
 *
 * Done in Python, every 256 KiB read and every 64 KiB record passes through the
 * daemon's one event loop (about 1 s of its CPU per GB received), so one receiving
 * daemon was bound to one core whatever the number of its peers. Here a session's
 * worker thread reads and opens a frame's records while the loop, and the other
 * sessions' threads, go on; only the bytes that are not a large frame's whole
 * records (its head, a record that runs past its end) go through Python. What a
 * record means, and what a failure means for the session, stay in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/evp.h>

#define LENGTH_SIZE 2
#define TAG_SIZE 16
#define KEY_SIZE 32
#define NONCE_SIZE 12

/* Why a pump returned; the numbers are the module's constants of the same names. */
enum {
    FULL = 0,      /* the destination is full, or its next record would not fit */
    WAITED = 1,    /* the call's time ran out waiting for bytes */
    CLOSED = 2,    /* the peer closed its side */
    FAILED = 3,    /* a system call failed: `error` is its errno */
    BAD_TAG = 4,   /* a record did not authenticate: the channel is dead */
    SHORT = 5,     /* a record is shorter than its tag */
    LIMIT = 6,     /* `max_records` were opened, or `max_bytes` received */
};

typedef struct {
    Py_ssize_t written;  /* plaintext bytes put into dst */
    Py_ssize_t records;  /* records opened */
    Py_ssize_t left;     /* wire bytes at the head of `wire` not opened */
    Py_ssize_t received; /* bytes read from the socket */
    int status;
    int error;
} Outcome;

static int64_t
now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int
open_record(EVP_CIPHER_CTX *ctx, uint64_t counter, const uint8_t *sealed, int plain, uint8_t *out)
{
    uint8_t nonce[NONCE_SIZE] = {0};
    for (int i = 0; i < 8; i++)
        nonce[NONCE_SIZE - 1 - i] = (uint8_t)(counter >> (8 * i));
    int len = 0;
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1)
        return 0;
    if (plain > 0 && EVP_DecryptUpdate(ctx, out, &len, sealed, plain) != 1)
        return 0;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_SIZE, (void *)(sealed + plain)) != 1)
        return 0;
    return EVP_DecryptFinal_ex(ctx, out + len, &len) == 1;
}

/* The loop, GIL released: open whole records from `wire` (its first `have` bytes are
 * already received), reading more from `fd` whenever no whole record is left. */
static void
pump(int fd, EVP_CIPHER_CTX *ctx, uint64_t nonce, Py_ssize_t max_records, Py_ssize_t max_bytes,
     uint8_t *dst, Py_ssize_t room, uint8_t *wire, Py_ssize_t capacity, Py_ssize_t have, int timeout_ms,
     Outcome *out)
{
    Py_ssize_t pos = 0, end = have;
    int64_t deadline = now_ms() + timeout_ms;
    memset(out, 0, sizeof *out);
    for (;;) {
        while (end - pos >= LENGTH_SIZE) {
            Py_ssize_t size = ((Py_ssize_t)wire[pos] << 8) | wire[pos + 1];
            if (size < TAG_SIZE) {
                out->status = SHORT;
                goto done;
            }
            if (end - pos < LENGTH_SIZE + size)
                break;
            Py_ssize_t plain = size - TAG_SIZE;
            if (plain > room - out->written) {
                out->status = FULL;
                goto done;
            }
            if (out->records >= max_records) {
                out->status = LIMIT;
                goto done;
            }
            if (!open_record(ctx, nonce + (uint64_t)out->records, wire + pos + LENGTH_SIZE, (int)plain,
                             dst + out->written)) {
                out->status = BAD_TAG;
                goto done;
            }
            out->written += plain;
            out->records++;
            pos += LENGTH_SIZE + size;
        }
        if (out->written == room) {
            out->status = FULL;
            goto done;
        }
        if (out->received >= max_bytes) {
            out->status = LIMIT;
            goto done;
        }
        if (pos) {
            memmove(wire, wire + pos, (size_t)(end - pos));
            end -= pos;
            pos = 0;
        }
        Py_ssize_t want = capacity - end;
        if (want > max_bytes - out->received)
            want = max_bytes - out->received;
        ssize_t n = recv(fd, wire + end, (size_t)want, MSG_DONTWAIT);
        if (n > 0) {
            end += n;
            out->received += n;
            continue;
        }
        if (n == 0) {
            out->status = CLOSED;
            goto done;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            out->status = FAILED;
            out->error = errno;
            goto done;
        }
        int64_t rest = deadline - now_ms();
        struct pollfd wait = {fd, POLLIN, 0};
        int ready = rest > 0 ? poll(&wait, 1, (int)rest) : 0;
        if (ready == 0) {
            out->status = WAITED;
            goto done;
        }
        if (ready < 0 && errno != EINTR) {
            out->status = FAILED;
            out->error = errno;
            goto done;
        }
    }
done:
    if (pos)
        memmove(wire, wire + pos, (size_t)(end - pos));
    out->left = end - pos;
}

PyDoc_STRVAR(pump_doc,
"pump(fd, key, nonce, max_records, max_bytes, dst, wire, have, timeout_ms, /)\n"
"    -> (status, error, written, records, left, received)\n\n"
"Open whole records into `dst` (writable), the first `have` bytes of `wire` (a\n"
"writable work buffer larger than the largest record) first, then what `fd` (a\n"
"non-blocking stream socket) delivers, receiving at most `max_bytes`. Record i is\n"
"opened with nonce `nonce` + i and at most `max_records` are; the call waits for\n"
"bytes until `timeout_ms` after it began at most. Returns why it stopped (FULL,\n"
"WAITED, CLOSED, FAILED with\n"
"`error` an errno, BAD_TAG or SHORT at the record after the opened ones, LIMIT),\n"
"the plaintext bytes written, the records opened, how many unopened bytes are\n"
"left at the head of `wire`, and how many bytes were received.");

static PyObject *
pump_py(PyObject *self, PyObject *args)
{
    (void)self;
    int fd, timeout_ms;
    Py_buffer key = {0}, dst = {0}, wire = {0};
    unsigned long long nonce;
    Py_ssize_t max_records, max_bytes, have;
    if (!PyArg_ParseTuple(args, "iy*Knnw*w*ni:pump", &fd, &key, &nonce, &max_records, &max_bytes, &dst, &wire,
                          &have, &timeout_ms))
        return NULL;
    PyObject *result = NULL;
    EVP_CIPHER_CTX *ctx = NULL;
    if (key.len != KEY_SIZE) {
        PyErr_SetString(PyExc_ValueError, "the key must be 32 bytes");
        goto done;
    }
    if (have < 0 || have > wire.len || wire.len < LENGTH_SIZE + 65535 || max_records < 0 || max_bytes < 0) {
        PyErr_SetString(PyExc_ValueError, "wire must hold a whole record and `have` bytes");
        goto done;
    }
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL || EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key.buf, NULL) != 1) {
        PyErr_SetString(PyExc_RuntimeError, "libcrypto could not set up AES-256-GCM");
        goto done;
    }
    Outcome out;
    Py_BEGIN_ALLOW_THREADS
    pump(fd, ctx, (uint64_t)nonce, max_records, max_bytes, dst.buf, dst.len, wire.buf, wire.len, have, timeout_ms,
         &out);
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("iinnnn", out.status, out.error, out.written, out.records, out.left, out.received);
done:
    EVP_CIPHER_CTX_free(ctx);
    PyBuffer_Release(&key);
    PyBuffer_Release(&dst);
    PyBuffer_Release(&wire);
    return result;
}

static PyMethodDef methods[] = {
    {"pump", pump_py, METH_VARARGS, pump_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_recordpump", "A large frame's records read and opened with the GIL released.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__recordpump(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    static const struct {
        const char *name;
        int value;
    } constants[] = {{"FULL", FULL}, {"WAITED", WAITED}, {"CLOSED", CLOSED}, {"FAILED", FAILED},
                     {"BAD_TAG", BAD_TAG}, {"SHORT", SHORT}, {"LIMIT", LIMIT}};
    for (size_t i = 0; i < sizeof constants / sizeof constants[0]; i++) {
        if (PyModule_AddIntConstant(m, constants[i].name, constants[i].value) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
