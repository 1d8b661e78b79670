/* BLAKE3 of many chunks with the GIL released once a batch.
 *
 * The `blake3` module gives the GIL up for every input of 2 KiB or more, and beside
 * a thread that runs Python taking it back costs up to a switch interval: 257 us a
 * 60 KB chunk that alone hashes in 15 us (bench/JOURNAL.md, "What a small file waits for").
 * Here a whole batch is hashed in one call by the `blake3` crate (native/chunkhash),
 * linked in statically when `pip install` finds cargo; the ids are the same.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>

#define ID_SIZE 32

extern void shoal_derive_many(const uint8_t *context, size_t context_len, const uint8_t *const *ptrs,
                              const size_t *lens, size_t count, uint8_t *out);

PyDoc_STRVAR(derive_many_doc,
"derive_many(context, buffers, /) -> bytes\n\n"
"The BLAKE3 derive-key hash with `context` of each of `buffers` (any contiguous\n"
"buffers), 32 bytes each back to back, computed with the GIL released once.");

static PyObject *
derive_many(PyObject *self, PyObject *args)
{
    (void)self;
    const char *context;
    Py_ssize_t context_len;
    PyObject *arg;
    if (!PyArg_ParseTuple(args, "s#O:derive_many", &context, &context_len, &arg))
        return NULL;
    PyObject *seq = PySequence_Fast(arg, "derive_many takes a list of buffers");
    if (seq == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    Py_buffer *views = PyMem_Calloc((size_t)count + 1, sizeof(Py_buffer));
    const uint8_t **ptrs = PyMem_Calloc((size_t)count + 1, sizeof(uint8_t *));
    size_t *lens = PyMem_Calloc((size_t)count + 1, sizeof(size_t));
    PyObject *result = NULL;
    Py_ssize_t ready = 0;
    if (views == NULL || ptrs == NULL || lens == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; ready < count; ready++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, ready), &views[ready], PyBUF_SIMPLE) < 0)
            goto done;
        ptrs[ready] = views[ready].buf;
        lens[ready] = (size_t)views[ready].len;
    }
    result = PyBytes_FromStringAndSize(NULL, count * ID_SIZE);
    if (result == NULL)
        goto done;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
    Py_BEGIN_ALLOW_THREADS
    shoal_derive_many((const uint8_t *)context, (size_t)context_len, ptrs, lens, (size_t)count, out);
    Py_END_ALLOW_THREADS
done:
    if (views != NULL)
        for (Py_ssize_t i = 0; i < ready; i++)
            PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(ptrs);
    PyMem_Free(lens);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef methods[] = {
    {"derive_many", derive_many, METH_VARARGS, derive_many_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_chunkhash", "BLAKE3 of many chunks with the GIL released once a batch.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__chunkhash(void)
{
    return PyModule_Create(&module);
}
