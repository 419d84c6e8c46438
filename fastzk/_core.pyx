# cython: language_level=3
"""fastzk's Cython core: framing buffers, the jute codec, the WAL record codec, the data tree
(with its snapshot serialization), the read fast path, the write pipeline's prep and apply of common writes, and the inner loop of the linearizability
checker.

One compilation unit so that the fast path can reach buffer memory, tree nodes and encoders
as plain C calls, with no Python-level attribute access in between.
"""

cimport cython
from collections import deque
from cpython.buffer cimport PyBuffer_FillInfo
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, memmove, memset

include "core/buffer.pxi"
include "core/jute.pxi"
include "core/wal.pxi"
include "core/children.pxi"
include "core/tree.pxi"
include "core/fastpath.pxi"
include "core/prep.pxi"
include "core/host.pxi"
include "core/lincheck.pxi"
