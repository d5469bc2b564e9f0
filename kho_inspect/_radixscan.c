// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Radix leaf scanner
 * ------------------
 *
 * The native scanner of KHO radix leaf bitmaps (docs/kernel/radix.md) behind
 * kho_inspect.radix: it appends the runs of set bits of a bitmap, or of all
 * the leaves of one level-1 table, to the caller's list as (phys, size,
 * order) tuples, exactly as the pure-Python scanner does, so that a run costs
 * one tuple and two ints. kho_inspect.radix uses it when it is built and
 * KHO_INSPECT_PURE is not set; the Python scanner stays the reference, and
 * the tests run both on the same bitmaps and trees.
 *
 * Only the limited C API of Python 3.9 (the stable ABI) is used.
 */

#define Py_LIMITED_API 0x03090000
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/*
 * One scan. Bit i (of a bitmap, or of the concatenated leaves of a table,
 * leaf k at bit k * leaf_bits) stands for base + (i << shift). Narrow mode
 * computes in u64s, which every real tree fits; wide mode, for any other
 * input, in Python ints, with the very operations of the Python scanner.
 */
struct scan {
	PyObject *out;		/* the caller's list (or any object with append) */
	PyObject *order;	/* the third item of every tuple, as given */
	int untrack;		/* order is an int: no tuple needs the collector */
	int big;		/* bitmap words are big-endian */
	int wide;		/* some value may not fit in a u64: Python ints */
	uint64_t base;		/* narrow: base and shift */
	unsigned int shift;
	PyObject *base_obj;	/* wide: base and shift as given */
	PyObject *shift_obj;
	int open;		/* a run is open */
	int ended;		/* some run ended (the one carried in, first) */
	uint64_t open_phys;	/* narrow: where the open run began */
	PyObject *open_obj;	/* wide: where it began (a new reference) */
	Py_ssize_t open_bit;	/* the bit where it began, or the first bit scanned */
	Py_ssize_t blocks;	/* set bits scanned: the blocks of the runs */
};

static int append_range(struct scan *s, PyObject *start, PyObject *size)
{
	PyObject *range;
	int rc, untrack;

	if (!start || !size) {
		Py_XDECREF(start);
		Py_XDECREF(size);
		return -1;
	}
	/* A tuple of ints can never be part of a cycle, and CPython's collector
	 * untracks it at its first pass anyway: untracked at once, hundreds of
	 * thousands of them cost the collector nothing. */
	untrack = s->untrack && PyLong_CheckExact(start) && PyLong_CheckExact(size);
	range = PyTuple_Pack(3, start, size, s->order);
	Py_DECREF(start); /* the tuple holds them now */
	Py_DECREF(size);
	if (!range)
		return -1;
	if (untrack)
		PyObject_GC_UnTrack(range);
	if (PyList_CheckExact(s->out)) {
		rc = PyList_Append(s->out, range);
	} else { /* out.append(range), as the Python scanner calls it */
		PyObject *name = PyUnicode_FromString("append");
		PyObject *res = name ? PyObject_CallMethodObjArgs(s->out, name, range, NULL) : NULL;

		rc = res ? 0 : -1;
		Py_XDECREF(res);
		Py_XDECREF(name);
	}
	Py_DECREF(range);
	return rc;
}

/*
 * Run sizes repeat (a run of n pages is n << shift bytes), so the ints of the
 * sizes of runs shorter than SIZE_CACHE blocks are made once per shift and
 * shared, as CPython shares its small ints: one allocation per range fewer.
 */
#define SIZE_CACHE 1024
static PyObject **size_cache[64];

static PyObject *size_int(uint64_t size, unsigned int shift)
{
	uint64_t count = size >> shift;
	PyObject **row = size_cache[shift];

	if (count >= SIZE_CACHE || count << shift != size)
		return PyLong_FromUnsignedLongLong(size);
	if (!row) {
		row = PyMem_Malloc(SIZE_CACHE * sizeof(*row));
		if (!row)
			return PyErr_NoMemory();
		memset(row, 0, SIZE_CACHE * sizeof(*row));
		size_cache[shift] = row;
	}
	if (!row[count] && !(row[count] = PyLong_FromUnsignedLongLong(size)))
		return NULL;
	Py_INCREF(row[count]);
	return row[count];
}

/* base + (bit << shift) as a new Python int (wide mode). */
static PyObject *wide_phys(struct scan *s, Py_ssize_t bit)
{
	PyObject *index = PyLong_FromSsize_t(bit), *offset, *phys;

	if (!index)
		return NULL;
	offset = PyNumber_Lshift(index, s->shift_obj);
	Py_DECREF(index);
	if (!offset)
		return NULL;
	phys = PyNumber_Add(s->base_obj, offset);
	Py_DECREF(offset);
	return phys;
}

/* A run begins at bit `bit`. */
static inline int run_starts(struct scan *s, Py_ssize_t bit)
{
	s->open = 1;
	s->open_bit = bit;
	if (!s->wide) {
		s->open_phys = s->base + ((uint64_t)bit << s->shift);
		return 0;
	}
	Py_XDECREF(s->open_obj);
	s->open_obj = wide_phys(s, bit);
	return s->open_obj ? 0 : -1;
}

/* The open run ends at bit `bit`: its last set bit is bit - 1. */
static int run_ends(struct scan *s, Py_ssize_t bit)
{
	PyObject *start, *end, *size;

	s->open = 0;
	s->ended = 1;
	s->blocks += bit - s->open_bit;
	if (!s->wide) {
		uint64_t end_phys = s->base + ((uint64_t)bit << s->shift);

		return append_range(s, PyLong_FromUnsignedLongLong(s->open_phys),
				    size_int(end_phys - s->open_phys, s->shift));
	}
	start = s->open_obj;
	s->open_obj = NULL;
	end = wide_phys(s, bit);
	if (!end) {
		Py_DECREF(start);
		return -1;
	}
	size = PyNumber_Subtract(end, start);
	Py_DECREF(end);
	return append_range(s, start, size);
}

/* A 64-bit word of the bitmap at p, in the target's byte order. */
static inline uint64_t word_at(const unsigned char *p, int big)
{
	uint64_t word;

	memcpy(&word, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	return big ? word : __builtin_bswap64(word);
#else
	return big ? __builtin_bswap64(word) : word;
#endif
}

/* Word w of a bitmap of nbytes: bit i of the result is bit 64 * w + i of the
 * bitmap; the bits past its end (of a partial last word) are clear. */
static inline uint64_t load_word(const unsigned char *bytes, Py_ssize_t nbytes, Py_ssize_t w,
				 int big)
{
	uint64_t word = 0;

	if (nbytes - w * 8 >= 8)
		return word_at(bytes + w * 8, big);
	for (Py_ssize_t i = 0; w * 8 + i < nbytes; i++) /* little-endian, as Python's */
		word |= (uint64_t)bytes[w * 8 + i] << (8 * i);
	return word;
}

/*
 * Scan one bitmap whose bit 0 is bit `offset` of the scan. Between runs it
 * looks for the next set bit, inside a run for the next clear one: words of
 * all zeros (resp. ones) are skipped four at a time with one compare, and
 * the edge inside a word is a count of trailing zeros, so a run costs two of
 * those plus its tuple. A run that reaches the last bit stays open.
 */
static int scan_bits(struct scan *s, const unsigned char *bytes, Py_ssize_t nbytes,
		     Py_ssize_t offset)
{
	const Py_ssize_t nbits = nbytes * 8, nwords = (nbytes + 7) / 8, nfull = nbytes / 8;
	const int big = s->big;
	Py_ssize_t w = 0;
	uint64_t todo = ~(uint64_t)0; /* the bits of word w not passed yet */

	if (nbytes >= 8 && nbytes == nfull * 8) {
		/* A full leaf inside a run, or an empty one between runs: every
		 * word is the first one and that one is all ones (zeros). */
		uint64_t first;

		memcpy(&first, bytes, 8);
		if (first == (s->open ? ~(uint64_t)0 : 0) && !memcmp(bytes, bytes + 8, nbytes - 8))
			return 0;
	}
	for (;;) {
		/* Looking for a set bit between runs, for a clear one inside. */
		const uint64_t flip = s->open ? ~(uint64_t)0 : 0;
		uint64_t hits = (load_word(bytes, nbytes, w, big) ^ flip) & todo;
		int t;

		while (!hits) {
			/* Skip the words that are flip (all ones or zeros: the same
			 * in either byte order), four at a time, and go to the first
			 * other one of the four without another branch. */
			for (w++; w + 4 <= nfull; w += 4) {
				uint64_t q[4];
				unsigned int other;

				memcpy(q, bytes + w * 8, sizeof(q));
				other = (unsigned int)(q[0] != flip) | (unsigned int)(q[1] != flip) << 1 |
					(unsigned int)(q[2] != flip) << 2 | (unsigned int)(q[3] != flip) << 3;
				if (other) {
					w += __builtin_ctz(other);
					break;
				}
			}
			while (w < nfull && word_at(bytes + w * 8, 0) == flip)
				w++;
			if (w >= nwords)
				return 0;
			hits = load_word(bytes, nbytes, w, big) ^ flip;
		}
		t = __builtin_ctzll(hits);
		if (s->open && w * 64 + t >= nbits)
			return 0; /* the clear padding of a partial last word */
		if ((s->open ? run_ends(s, offset + w * 64 + t)
			     : run_starts(s, offset + w * 64 + t)) < 0)
			return -1;
		todo = t == 63 ? 0 : ~(uint64_t)0 << (t + 1);
	}
}

/* open_run >= 0, as the Python scanner tests it: 1, 0, or -1 on error. */
static int is_open(PyObject *open_run)
{
	PyObject *zero;
	int overflow, rc;
	long v;

	if (PyLong_Check(open_run)) {
		v = PyLong_AsLongAndOverflow(open_run, &overflow);
		if (v == -1 && PyErr_Occurred())
			return -1;
		return overflow ? overflow > 0 : v >= 0;
	}
	zero = PyLong_FromLong(0);
	if (!zero)
		return -1;
	rc = PyObject_RichCompareBool(open_run, zero, Py_GE);
	Py_DECREF(zero);
	return rc;
}

static int as_u64(PyObject *obj, uint64_t *value)
{
	unsigned long long v;

	if (!PyLong_Check(obj))
		return 0;
	v = PyLong_AsUnsignedLongLong(obj);
	if (v == (unsigned long long)-1 && PyErr_Occurred()) {
		PyErr_Clear();
		return 0;
	}
	*value = v;
	return 1;
}

/*
 * Set up a scan of bits [first, stop) carrying open_run in at bit `first`:
 * narrow mode when base, shift, the run carried in and base + (stop << shift)
 * all fit in a u64 (and sizes cannot be negative), wide mode otherwise.
 */
static int start_scan(struct scan *s, PyObject *base, PyObject *open_run, PyObject *out,
		      PyObject *shift, PyObject *order, Py_ssize_t first, Py_ssize_t stop)
{
	uint64_t b, o = 0, end, first_phys;
	long sh;
	int overflow;

	s->out = out;
	s->order = order;
	s->untrack = PyLong_CheckExact(order);
	s->open_bit = first;
	s->open = is_open(open_run);
	if (s->open < 0)
		return -1;
	sh = PyLong_Check(shift) ? PyLong_AsLongAndOverflow(shift, &overflow) : -1;
	if (sh == -1 && PyErr_Occurred())
		return -1;
	if (PyLong_Check(shift) && !overflow && sh >= 0 && sh <= 63 && as_u64(base, &b) &&
	    (!s->open || as_u64(open_run, &o)) && (uint64_t)stop <= (UINT64_MAX >> sh) &&
	    !__builtin_add_overflow(b, (uint64_t)stop << sh, &end)) {
		first_phys = b + ((uint64_t)first << sh);
		if (o <= first_phys) {
			s->base = b;
			s->shift = (unsigned int)sh;
			s->open_phys = o;
			return 0;
		}
	}
	s->wide = 1;
	s->base_obj = base;
	s->shift_obj = shift;
	if (s->open) {
		Py_INCREF(open_run);
		s->open_obj = open_run;
	}
	return 0;
}

/* bits as bytes: a new reference, bits itself when it is bytes. */
static PyObject *as_bytes(PyObject *bits, char **data, Py_ssize_t *size)
{
	PyObject *b;

	if (PyBytes_CheckExact(bits)) {
		Py_INCREF(bits);
		b = bits;
	} else if (!(b = PyBytes_FromObject(bits))) {
		return NULL;
	}
	if (PyBytes_AsStringAndSize(b, data, size) < 0) {
		Py_DECREF(b);
		return NULL;
	}
	return b;
}

PyDoc_STRVAR(scan_bitmap_doc,
"scan_bitmap(bits, base, open_run, out, shift, order) -> open_run\n\n"
"Append the runs of set bits of a little-endian bitmap to ``out``: the native\n"
"kho_inspect.radix._scan_bitmap_py, with the same arguments and result. Bit i\n"
"stands for ``base + (i << shift)``; each run that ends inside ``bits`` is\n"
"appended as ``(start, size, order)``; ``open_run`` is where a run that\n"
"reaches bit 0 began (-1 if none); the result is where the run that reaches\n"
"the last bit began, or -1.");

static PyObject *scan_bitmap(PyObject *self, PyObject *args)
{
	PyObject *bits, *base, *open_run, *out, *shift, *order, *data, *result = NULL;
	struct scan s = { 0 };
	char *bytes;
	Py_ssize_t nbytes;
	int carried;

	(void)self;
	if (!PyArg_UnpackTuple(args, "scan_bitmap", 6, 6, &bits, &base, &open_run, &out, &shift,
			       &order))
		return NULL;
	data = as_bytes(bits, &bytes, &nbytes);
	if (!data)
		return NULL;
	if (start_scan(&s, base, open_run, out, shift, order, 0, nbytes * 8) < 0)
		goto out;
	carried = s.open;
	if (scan_bits(&s, (const unsigned char *)bytes, nbytes, 0) < 0)
		goto out;
	if (!s.open) {
		result = PyLong_FromLong(-1);
	} else if (carried && !s.ended) { /* the run carried in goes on: the same object */
		result = open_run;
		Py_INCREF(result);
	} else if (s.wide) {
		result = s.open_obj;
		s.open_obj = NULL;
	} else {
		result = PyLong_FromUnsignedLongLong(s.open_phys);
	}
out:
	Py_XDECREF(s.open_obj);
	Py_DECREF(data);
	return result;
}

PyDoc_STRVAR(scan_leaves_doc,
"scan_leaves(leaves, page_size, stop, base, open_run, out, shift, order, big_endian)\n"
"-> blocks\n\n"
"Append the runs of set bits of the leaves of one level-1 table to ``out``,\n"
"as ``(start, size, order)``. ``leaves`` yields ``(index, pointer, page)`` in\n"
"ascending index order below ``stop``, as _RadixWalk.read_leaves does: the\n"
"leaves (bitmaps of unsigned longs of ``page_size`` bytes, big-endian words if\n"
"``big_endian``); a missing leaf is all clear. Each page is scanned as it\n"
"comes and dropped. Bit b of leaf i stands for\n"
"``base + ((i * page_size * 8 + b) << shift)``. ``open_run`` (-1 if none) is\n"
"where a run that reaches bit 0 of the first leaf began; a run that reaches\n"
"the last bit of the last leaf ends there. Returns the number of set bits:\n"
"the blocks the leaves hold.");

/* The leaves of one table, as scan_leaves goes through them. */
struct table {
	Py_ssize_t page_size;	/* bytes per leaf */
	Py_ssize_t stop;	/* every index is below it */
	Py_ssize_t prev;	/* the index of the leaf before, or -1 */
};

/* Scan one (index, pointer, page) item of scan_leaves. */
static int scan_leaf(struct scan *s, struct table *t, PyObject *item)
{
	const Py_ssize_t leaf_bits = t->page_size * 8;
	Py_ssize_t i, nbytes;
	PyObject *data;
	char *bytes;
	int rc;

	if (!PyTuple_Check(item) || PyTuple_Size(item) != 3) {
		PyErr_SetString(PyExc_TypeError, "scan_leaves: leaves must be (index, pointer, page)");
		return -1;
	}
	i = PyLong_AsSsize_t(PyTuple_GetItem(item, 0));
	if (i == -1 && PyErr_Occurred())
		return -1;
	if (i <= t->prev || i >= t->stop) {
		PyErr_SetString(PyExc_ValueError, "scan_leaves: indices must ascend below stop");
		return -1;
	}
	if (t->prev < 0)
		s->open_bit = i * leaf_bits; /* where the run carried in is counted from */
	else if (s->open && i != t->prev + 1 && run_ends(s, (t->prev + 1) * leaf_bits) < 0)
		return -1; /* a leaf is missing: the run ended */
	t->prev = i;
	data = as_bytes(PyTuple_GetItem(item, 2), &bytes, &nbytes);
	if (!data)
		return -1;
	if (nbytes == t->page_size) {
		rc = scan_bits(s, (const unsigned char *)bytes, nbytes, i * leaf_bits);
	} else {
		PyErr_SetString(PyExc_ValueError, "scan_leaves: a leaf is not page_size bytes");
		rc = -1;
	}
	Py_DECREF(data);
	return rc;
}

static PyObject *scan_leaves(PyObject *self, PyObject *args)
{
	PyObject *leaves, *page_size, *stop, *base, *open_run, *out, *shift, *order, *big;
	PyObject *iter, *item;
	struct scan s = { 0 };
	struct table t = { .prev = -1 };
	int rc = 0;

	(void)self;
	if (!PyArg_UnpackTuple(args, "scan_leaves", 9, 9, &leaves, &page_size, &stop, &base,
			       &open_run, &out, &shift, &order, &big))
		return NULL;
	t.page_size = PyLong_AsSsize_t(page_size);
	t.stop = PyLong_AsSsize_t(stop);
	if (PyErr_Occurred())
		return NULL;
	if (t.page_size <= 0 || t.page_size % 8 || t.stop <= 0 ||
	    t.stop > PY_SSIZE_T_MAX / 8 / t.page_size) {
		PyErr_SetString(PyExc_ValueError, "scan_leaves: impossible page_size or stop");
		return NULL;
	}
	s.big = PyObject_IsTrue(big);
	if (s.big < 0 ||
	    start_scan(&s, base, open_run, out, shift, order, 0, t.stop * t.page_size * 8) < 0)
		return NULL;
	iter = PyObject_GetIter(leaves);
	if (!iter) {
		Py_XDECREF(s.open_obj);
		return NULL;
	}
	while (rc == 0 && (item = PyIter_Next(iter))) {
		rc = scan_leaf(&s, &t, item);
		Py_DECREF(item);
	}
	Py_DECREF(iter);
	if (rc == 0 && PyErr_Occurred())
		rc = -1;
	if (rc == 0 && s.open) {
		if (t.prev >= 0)
			rc = run_ends(&s, (t.prev + 1) * t.page_size * 8);
		else /* the caller took the run off out: it must end somewhere */
			PyErr_SetString(PyExc_ValueError, "scan_leaves: a run carried into no leaf");
		rc = PyErr_Occurred() ? -1 : rc;
	}
	Py_XDECREF(s.open_obj);
	return rc < 0 ? NULL : PyLong_FromSsize_t(s.blocks);
}

static PyMethodDef radixscan_methods[] = {
	{ "scan_bitmap", scan_bitmap, METH_VARARGS, scan_bitmap_doc },
	{ "scan_leaves", scan_leaves, METH_VARARGS, scan_leaves_doc },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef radixscan_module = {
	PyModuleDef_HEAD_INIT,
	"kho_inspect._radixscan",
	"Native scanner of KHO radix leaf bitmaps (see kho_inspect.radix).",
	-1,
	radixscan_methods,
	NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__radixscan(void)
{
	return PyModule_Create(&radixscan_module);
}
