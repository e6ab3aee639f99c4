/* Reading a chat-shaped logprob list in C: the one loop of the analysis that touches every entry and every
 * alternative dict (24k dicts for 4,000 tokens with 5 alternatives), where Python's per-lookup bytecode costs
 * more than the lookups themselves.
 *
 * read_uniform(entries, token_key, logprob_key, top_key, alt_key, k) -> (tokens, values) | None
 *   entries: a list (or tuple) of exact dicts, each holding token_key, logprob_key and top_key; top_key holds a
 *   list (or tuple) of exactly k exact dicts, each holding alt_key. Every logprob is a float or an int.
 *   tokens: tuple of the entries' token values, as they are (the caller checks they are strings).
 *   values: bytes of native float64, per entry its logprob then its k alternatives' logprobs.
 *   None when anything differs from that shape: the caller's general path then reads the list (and raises
 *   what it raises), so this function never decides what a malformed response means.
 *
 * The keys are the caller's own key strings (the parsed body's, when it has them): lookups then match by
 * identity. Every object read is held by a strong reference while it is used, so a dict whose keys compare
 * by running Python code cannot free what the loop is reading.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The float value of an exact float or int, or -1 with *ok = 0 for anything else (no exception left set). */
static double
number(PyObject *value, int *ok)
{
    if (PyFloat_CheckExact(value)) {
        return PyFloat_AS_DOUBLE(value);
    }
    if (PyLong_CheckExact(value)) {
        double d = PyLong_AsDouble(value);
        if (d == -1.0 && PyErr_Occurred()) { /* too large for a double */
            PyErr_Clear();
            *ok = 0;
        }
        return d;
    }
    *ok = 0;
    return -1.0;
}

/* A new reference to dict[key] for an exact dict holding key; NULL otherwise (no exception left set). */
static PyObject *
get(PyObject *dict, PyObject *key)
{
    if (!PyDict_CheckExact(dict)) {
        return NULL;
    }
    PyObject *value = PyDict_GetItemWithError(dict, key);
    if (value == NULL) {
        PyErr_Clear();
        return NULL;
    }
    Py_INCREF(value);
    return value;
}

/* A new reference to item i of a list or tuple that must still hold n items; NULL when a key comparison
 * (Python code) has changed its size since the loop began. */
static PyObject *
item(PyObject *seq, Py_ssize_t i, Py_ssize_t n)
{
    if (PySequence_Fast_GET_SIZE(seq) != n) {
        return NULL;
    }
    PyObject *value = PySequence_Fast_GET_ITEM(seq, i);
    Py_INCREF(value);
    return value;
}

/* One entry into tokens[i] and values[0..k]: 1 when read, 0 when its shape differs. */
static int
read_entry(PyObject *entry, PyObject *const *keys, Py_ssize_t k, PyObject *tokens, Py_ssize_t i, double *values)
{
    PyObject *token_key = keys[0], *logprob_key = keys[1], *top_key = keys[2], *alt_key = keys[3];
    int ok = 1;
    PyObject *token = get(entry, token_key);
    if (token == NULL) {
        return 0;
    }
    PyTuple_SET_ITEM(tokens, i, token); /* the tuple takes the reference */
    PyObject *logprob = get(entry, logprob_key);
    if (logprob == NULL) {
        return 0;
    }
    values[0] = number(logprob, &ok);
    Py_DECREF(logprob);
    PyObject *top = get(entry, top_key);
    if (top == NULL) {
        return 0;
    }
    if (!(PyList_CheckExact(top) || PyTuple_CheckExact(top)) || PySequence_Fast_GET_SIZE(top) != k) {
        Py_DECREF(top);
        return 0;
    }
    for (Py_ssize_t j = 0; ok && j < k; j++) {
        PyObject *alt = item(top, j, k);
        PyObject *value = alt == NULL ? NULL : get(alt, alt_key);
        Py_XDECREF(alt);
        if (value == NULL) {
            ok = 0;
            break;
        }
        values[1 + j] = number(value, &ok);
        Py_DECREF(value);
    }
    Py_DECREF(top);
    return ok;
}

static PyObject *
read_uniform(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "read_uniform(entries, token_key, logprob_key, top_key, alt_key, k)");
        return NULL;
    }
    PyObject *entries = args[0];
    Py_ssize_t k = PyLong_AsSsize_t(args[5]);
    if (k == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (k < 0 || !(PyList_CheckExact(entries) || PyTuple_CheckExact(entries))) {
        Py_RETURN_NONE;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(entries);
    if (n > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(double) / (k + 1)) {
        return PyErr_NoMemory();
    }
    PyObject *tokens = PyTuple_New(n);
    PyObject *packed = PyBytes_FromStringAndSize(NULL, n * (k + 1) * (Py_ssize_t)sizeof(double));
    if (tokens == NULL || packed == NULL) {
        Py_XDECREF(tokens);
        Py_XDECREF(packed);
        return NULL;
    }
    Py_INCREF(entries);
    double *values = (double *)PyBytes_AS_STRING(packed);
    int ok = 1;
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        PyObject *entry = item(entries, i, n);
        ok = entry != NULL && read_entry(entry, args + 1, k, tokens, i, values + i * (k + 1));
        Py_XDECREF(entry);
    }
    Py_DECREF(entries);
    if (!ok) { /* a tuple with unfilled slots is safe to free */
        Py_DECREF(tokens);
        Py_DECREF(packed);
        Py_RETURN_NONE;
    }
    PyObject *result = PyTuple_Pack(2, tokens, packed);
    Py_DECREF(tokens);
    Py_DECREF(packed);
    return result;
}

static PyMethodDef methods[] = {
    {"read_uniform", (PyCFunction)(void (*)(void))read_uniform, METH_FASTCALL,
     "read_uniform(entries, token_key, logprob_key, top_key, alt_key, k) -> (tokens, values) | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "guardrails.logprobs._accel", "Chat-shaped logprob lists read in C.", -1, methods,
};

PyMODINIT_FUNC
PyInit__accel(void)
{
    return PyModule_Create(&module);
}
