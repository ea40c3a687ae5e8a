/* The records of one Kafka record batch (message format v2) as the worker's Record tuples, in
 * one call: kafka-python parses each record in Python (a dozen varint calls and an object per
 * record), which costs the worker more per event than its decoder does. native_records.py
 * hands this function a batch's record bytes (after kafka-python has checked the batch's CRC
 * and decompressed it) and yields what it returns.
 *
 * Record (KIP-98's format, as kafka-python's DefaultRecordBatch._read_msg reads it):
 *   length varint | attributes int8 (read as a varint) | timestamp delta varlong | offset delta varint |
 *   key length varint, key | value length varint, value |
 *   header count varint, then each: key length varint, key (UTF-8) | value length varint, value
 * Every varint is zigzag-encoded; a negative key or value length is null. A record whose fields
 * do not fill exactly its length, a negative header count or header key length, bytes beyond
 * the buffer, or bytes left after the batch's last record raise ValueError (native_records.py
 * makes it kafka-python's CorruptRecordError).
 *
 * messages() does the same job for confluent-kafka, which parses in C but hands out one Message
 * object per record: their fields into Record tuples in one call instead of a Python loop of
 * seven method calls per message (confluent.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef struct {
    const uint8_t *at, *end;
} Cursor;

/* one zigzag varint (at most 64 bits); 0, or -1 with ValueError set */
static int read_varint(Cursor *c, int64_t *out) {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (c->at >= c->end) {
            PyErr_SetString(PyExc_ValueError, "record runs past the end of its batch");
            return -1;
        }
        const uint8_t byte = *c->at++;
        value |= (uint64_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) {
            *out = (int64_t)(value >> 1) ^ -(int64_t)(value & 1);
            return 0;
        }
    }
    PyErr_SetString(PyExc_ValueError, "varint out of int64 range");
    return -1;
}

/* `length` bytes from the cursor as bytes (null for a negative length); NULL on error */
static PyObject *read_bytes(Cursor *c, int64_t length) {
    if (length < 0) Py_RETURN_NONE;
    if (length > c->end - c->at) {
        PyErr_SetString(PyExc_ValueError, "record runs past the end of its batch");
        return NULL;
    }
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)c->at, (Py_ssize_t)length);
    c->at += length;
    return bytes;
}

/* the record's headers as a tuple of (str, bytes | None); NULL on error */
static PyObject *read_headers(Cursor *c) {
    int64_t count;
    if (read_varint(c, &count) < 0) return NULL;
    if (count < 0 || count > c->end - c->at) { /* each header takes at least two bytes */
        PyErr_Format(PyExc_ValueError, "invalid number of record headers %lld", (long long)count);
        return NULL;
    }
    PyObject *headers = PyTuple_New((Py_ssize_t)count);
    if (!headers) return NULL;
    for (Py_ssize_t i = 0; i < (Py_ssize_t)count; i++) {
        int64_t key_length, value_length;
        if (read_varint(c, &key_length) < 0) goto fail;
        if (key_length < 0 || key_length > c->end - c->at) {
            PyErr_Format(PyExc_ValueError, "invalid header key size %lld", (long long)key_length);
            goto fail;
        }
        PyObject *key = PyUnicode_DecodeUTF8((const char *)c->at, (Py_ssize_t)key_length, NULL);
        if (!key) goto fail;
        c->at += key_length;
        PyObject *value = read_varint(c, &value_length) < 0 ? NULL : read_bytes(c, value_length);
        if (!value) {
            Py_DECREF(key);
            goto fail;
        }
        PyObject *pair = PyTuple_Pack(2, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (!pair) goto fail;
        PyTuple_SET_ITEM(headers, i, pair);
    }
    return headers;
fail:
    Py_DECREF(headers);
    return NULL;
}

/* one record as Record(topic, partition, offset, value, key, headers), its length added to
 * `payload`; NULL on error */
static PyObject *read_record(Cursor *c, PyTypeObject *type, int64_t base_offset,
                             PyObject *topic, PyObject *partition, int64_t *payload) {
    int64_t length, delta;
    if (read_varint(c, &length) < 0) return NULL;
    const uint8_t *start = c->at;
    if (length < 0 || length > c->end - c->at) {
        PyErr_Format(PyExc_ValueError, "invalid record size %lld", (long long)length);
        return NULL;
    }
    /* attributes (unused by the format so far): an int8 in the format, read as a varint as
     * kafka-python reads it, so that a byte with its top bit set fails alike */
    if (read_varint(c, &delta) < 0) return NULL;
    if (read_varint(c, &delta) < 0) return NULL; /* timestamp delta: the Record has none */
    if (read_varint(c, &delta) < 0) return NULL; /* offset delta */
    PyObject *offset = PyLong_FromLongLong(base_offset + delta);
    if (!offset) return NULL;
    PyObject *key = NULL, *value = NULL, *headers = NULL;
    int64_t key_length, value_length;
    if (read_varint(c, &key_length) < 0 || !(key = read_bytes(c, key_length))) goto fail;
    if (read_varint(c, &value_length) < 0 || !(value = read_bytes(c, value_length))) goto fail;
    if (!(headers = read_headers(c))) goto fail;
    if (c->at - start != length) {
        PyErr_Format(PyExc_ValueError,
                     "invalid record size: expected to read %lld bytes in record payload, but "
                     "instead read %lld",
                     (long long)length, (long long)(c->at - start));
        goto fail;
    }
    PyObject *record = type->tp_alloc(type, 6);
    if (!record) goto fail;
    *payload += length;
    Py_INCREF(topic);
    Py_INCREF(partition);
    PyObject *fields[6] = {topic, partition, offset, value, key, headers};
    for (Py_ssize_t i = 0; i < 6; i++) PyTuple_SET_ITEM(record, i, fields[i]);
    return record;
fail:
    Py_DECREF(offset);
    Py_XDECREF(key);
    Py_XDECREF(value);
    Py_XDECREF(headers);
    return NULL;
}

/* the record type every function takes first, once the call's argument count is checked;
 * NULL with TypeError set otherwise */
static PyTypeObject *record_type(const char *function, PyObject *const *args, Py_ssize_t n,
                                 Py_ssize_t expected) {
    if (n != expected) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", function, expected,
                     n);
        return NULL;
    }
    if (!PyType_Check(args[0]) || !PyType_IsSubtype((PyTypeObject *)args[0], &PyTuple_Type)) {
        PyErr_Format(PyExc_TypeError, "%s(): record_type must be a tuple type", function);
        return NULL;
    }
    return (PyTypeObject *)args[0];
}

/* records(record_type, buffer, start, count, base_offset, topic, partition) -> (list, int):
 * the `count` records from byte `start` of `buffer` (a batch's record bytes to its end), and
 * the sum of their lengths (kafka-python's bytes-read count) */
static PyObject *records(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    (void)self;
    PyTypeObject *type = record_type("records", args, n, 7);
    if (!type) return NULL;
    const Py_ssize_t start = PyLong_AsSsize_t(args[2]), count = PyLong_AsSsize_t(args[3]);
    const long long base_offset = PyLong_AsLongLong(args[4]);
    if (PyErr_Occurred()) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *list = NULL, *result = NULL;
    int64_t payload = 0;
    if (start < 0 || start > view.len || count < 0) {
        PyErr_SetString(PyExc_ValueError, "records(): start or count outside the buffer");
        goto done;
    }
    Cursor c = {(const uint8_t *)view.buf + start, (const uint8_t *)view.buf + view.len};
    if (!(list = PyList_New(count))) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *record = read_record(&c, type, base_offset, args[5], args[6], &payload);
        if (!record) {
            Py_CLEAR(list);
            goto done;
        }
        PyList_SET_ITEM(list, i, record);
    }
    if (c.at != c.end) {
        PyErr_Format(PyExc_ValueError, "%lld unconsumed bytes after all records consumed",
                     (long long)(c.end - c.at));
        Py_CLEAR(list);
    }
    if (list) result = Py_BuildValue("(NL)", list, (long long)payload); /* N: list's reference */
done:
    PyBuffer_Release(&view);
    return result;
}

/* confluent-kafka Message method names, interned once by the module's init */
static PyObject *name_error, *name_topic, *name_partition, *name_offset, *name_value, *name_key,
    *name_headers;

/* a message's headers (None or a list of (str, bytes | None)) as a tuple of (str, bytes), a None
 * value as b"": `tuple((k, v or b"") for k, v in headers) if headers else ()`; NULL on error */
static PyObject *message_headers(PyObject *headers) {
    if (headers == Py_None) return PyTuple_New(0);
    PyObject *items = PySequence_Fast(headers, "message headers must be a sequence");
    if (!items) return NULL;
    const Py_ssize_t count = PySequence_Fast_GET_SIZE(items);
    PyObject *out = PyTuple_New(count);
    for (Py_ssize_t i = 0; out && i < count; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(items, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_SetString(PyExc_TypeError, "a message header must be a (key, value) tuple");
            Py_CLEAR(out);
            break;
        }
        PyObject *value = PyTuple_GET_ITEM(item, 1);
        PyObject *pair = value == Py_None || !PyObject_IsTrue(value)
                             ? Py_BuildValue("(Oy#)", PyTuple_GET_ITEM(item, 0), "", (Py_ssize_t)0)
                             : Py_BuildValue("(OO)", PyTuple_GET_ITEM(item, 0), value);
        if (!pair) {
            Py_CLEAR(out);
            break;
        }
        PyTuple_SET_ITEM(out, i, pair);
    }
    Py_DECREF(items);
    return out;
}

/* messages(record_type, messages) -> list | None: confluent-kafka's Messages as Records
 * (topic, partition, offset, value, key, headers), in order; None, and nothing built, where one
 * of them carries an error (confluent.py's own loop then says what each error means) */
static PyObject *messages(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    (void)self;
    PyTypeObject *type = record_type("messages", args, n, 2);
    if (!type) return NULL;
    if (!PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "messages(): messages must be a list");
        return NULL;
    }
    PyObject *source = args[1];
    const Py_ssize_t count = PyList_GET_SIZE(source);
    PyObject *list = PyList_New(count);
    if (!list) return NULL;
    PyObject *const names[5] = {name_topic, name_partition, name_offset, name_value, name_key};
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *message = PyList_GET_ITEM(source, i);
        PyObject *error = PyObject_CallMethodNoArgs(message, name_error);
        if (!error) goto fail;
        Py_DECREF(error);
        if (error != Py_None) {
            Py_DECREF(list);
            Py_RETURN_NONE;
        }
        PyObject *record = type->tp_alloc(type, 6);
        if (!record) goto fail;
        PyList_SET_ITEM(list, i, record); /* filled below; the list frees it on failure */
        for (int f = 0; f < 5; f++) {
            PyObject *field = PyObject_CallMethodNoArgs(message, names[f]);
            if (!field) goto fail;
            PyTuple_SET_ITEM(record, f, field);
        }
        PyObject *headers = PyObject_CallMethodNoArgs(message, name_headers);
        if (!headers) goto fail;
        PyObject *fields = message_headers(headers);
        Py_DECREF(headers);
        if (!fields) goto fail;
        PyTuple_SET_ITEM(record, 5, fields);
    }
    return list;
fail:
    Py_DECREF(list);
    return NULL;
}

static PyMethodDef functions[] = {
    {"records", (PyCFunction)(void (*)(void))records, METH_FASTCALL,
     "records(record_type, buffer, start, count, base_offset, topic, partition) -> (list, int)"},
    {"messages", (PyCFunction)(void (*)(void))messages, METH_FASTCALL,
     "messages(record_type, messages) -> list | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_records", "Kafka records as tuples.", -1, functions,
};

PyMODINIT_FUNC PyInit__records(void) {
    struct {
        PyObject **at;
        const char *name;
    } names[] = {{&name_error, "error"},         {&name_topic, "topic"},
                 {&name_partition, "partition"}, {&name_offset, "offset"},
                 {&name_value, "value"},         {&name_key, "key"},
                 {&name_headers, "headers"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!*names[i].at && !(*names[i].at = PyUnicode_InternFromString(names[i].name)))
            return NULL;
    return PyModule_Create(&module);
}
