# Shared nogil building blocks of the search kernels: a bounded max-heap that
# keeps the k smallest (distance, id) pairs, lookup-table construction, and
# lookup-table summation over packed PQ codes.
#
# Every kernel works in "smaller is better" space: inner-product similarities
# are negated on the way in and negated back by the Python caller.  Heap
# comparisons are lexicographic on (distance, id), so the k results kept are
# exactly the k smallest pairs whatever the visiting order; this is what
# makes results independent of the thread count.

from libc.stdint cimport INT64_MAX, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport malloc
from libc.float cimport FLT_MAX
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport sgemm



cdef extern from "simd.h" nogil:
    void pqfast_prefetch(const void* p, Py_ssize_t n)
    void pqfast_dots(const float* x, const float* y, Py_ssize_t n, Py_ssize_t d,
                     float* out)
    int pqfast_gemm_own(int max_level)
    void pqfast_gemm_abt(const float* a, Py_ssize_t lda, Py_ssize_t na, const float* b,
                         Py_ssize_t ldb, Py_ssize_t nb, Py_ssize_t dim, float* c)
    void pqfast_dot_table(
        const float* x, const float* cbt, Py_ssize_t M, Py_ssize_t dsub,
        Py_ssize_t ksub, float scale, float* out)
    void pqfast_add(const float* a, const float* b, Py_ssize_t n, float* out)
    void pqfast_l2sq_rows(const float* x, const float* y, Py_ssize_t n, Py_ssize_t d,
                          float* out)
    ctypedef Py_ssize_t (*pqfast_elkan_fn)(const float* x, const float* cents,
                                           const float* cbb, Py_ssize_t d,
                                           Py_ssize_t k, const float* shift, float* W,
                                           Py_ssize_t a, float rel, float* dist)
    pqfast_elkan_fn pqfast_elkan_impl(int max_level)
    int pqfast_elkan_fast(int max_level)
    ctypedef float (*pqfast_l2sq_cols_fn)(const float* x, const float* cbt,
                                          Py_ssize_t dsub, Py_ssize_t ksub,
                                          float* out)
    pqfast_l2sq_cols_fn pqfast_l2sq_cols_impl(int max_level, Py_ssize_t ksub)
    ctypedef void (*pqfast_l2sq_cols2_fn)(const float* x0, const float* x1,
                                          const float* cbt, Py_ssize_t dsub,
                                          Py_ssize_t ksub, float* out0, float* out1,
                                          float* mins)
    pqfast_l2sq_cols2_fn pqfast_l2sq_cols2_impl(int max_level, Py_ssize_t ksub)
    ctypedef int (*pqfast_count_le_fn)(const float* d, Py_ssize_t n, float thr,
                                       int* last)
    pqfast_count_le_fn pqfast_count_le_impl(int max_level, Py_ssize_t n)
    void pqfast_adc8_block(const float* table, const uint8_t* codes, Py_ssize_t n,
                           Py_ssize_t M, float base, float* out)
    void pqfast_adc4_block(const float* table, const uint8_t* codes, Py_ssize_t n,
                           Py_ssize_t M, Py_ssize_t code_size, float base, float* out)
    void pqfast_adc8_block2(const float* t1, const float* t2, const uint8_t* codes,
                            Py_ssize_t n, Py_ssize_t M, float base, float* out)
    ctypedef void (*pqfast_pq8_direct_fn)(const float* r, const float* cents,
                                          const uint8_t* codes, Py_ssize_t n,
                                          Py_ssize_t M, Py_ssize_t dsub, int l2,
                                          float base, float* out)
    pqfast_pq8_direct_fn pqfast_pq8_direct_impl(int max_level)
    enum: PQFAST_MQ
    ctypedef void (*pqfast_adc_multi_fn)(const float* T, const uint8_t* codes,
                                         Py_ssize_t n, Py_ssize_t M, const float* base,
                                         const float* thr, float* out, uint8_t* hit)
    pqfast_adc_multi_fn pqfast_adc_multi_impl(int max_level, int nbits)
    void pqfast_interleave8(const float* tables, Py_ssize_t nq, Py_ssize_t mk, float* T)
    void pqfast_dot_tables(const float* x, Py_ssize_t ldx, Py_ssize_t nq,
                           const float* cbt, Py_ssize_t M, Py_ssize_t dsub,
                           Py_ssize_t ksub, float scale, float* out, Py_ssize_t ldo)
    void pqfast_l2_from_dots(float* dist, const float* xnorm, float qn, Py_ssize_t n)
    void pqfast_negate(float* dist, Py_ssize_t n)
    float pqfast_min(const float* d, Py_ssize_t n)
    ctypedef uint64_t (*pqfast_lt_bits_fn)(const float* d, Py_ssize_t n, float thr)
    pqfast_lt_bits_fn pqfast_lt_bits_impl(int max_level)
    Py_ssize_t pqfast_ctz64(uint64_t x)
    void pqfast_sort_pairs(const float* d, const int64_t* ids, Py_ssize_t n,
                           uint32_t* keys, float* od, int64_t* oi)
    void pqfast_select_k(float* d, int64_t* ids, Py_ssize_t n, Py_ssize_t k,
                         uint32_t* keys, float* td, int64_t* ti)
    uint32_t pqfast_kth_key(const uint32_t* keys, Py_ssize_t n, Py_ssize_t k)
    Py_ssize_t pqfast_keep_le(uint32_t* keys, int64_t* pos, Py_ssize_t n, uint32_t t)


cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define PQFAST_HAVE_OPENMP 1
    #else
    #define PQFAST_HAVE_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    static void omp_set_num_threads(int n) { (void)n; }
    #endif
    """
    int PQFAST_HAVE_OPENMP
    int omp_get_max_threads() noexcept nogil
    void omp_set_num_threads(int n) noexcept nogil


cdef inline int team_size(Py_ssize_t n_items, Py_ssize_t grain, int cap) noexcept nogil:
    """Threads worth waking for n_items work items of which each thread should
    get at least `grain`: between 1 and cap (cap <= 0: omp_get_max_threads()).

    A team of one runs on the calling thread, so a small call neither waits for
    sleeping workers nor queues behind other processes on a busy machine.  It
    still enters libgomp, though (GOMP_parallel sets a team up and tears it
    down, with a futex wake at its closing barrier): about 2 us a call, a
    tenth of a one-query IVFPQ search.  Kernels often called for one work item
    therefore run a team of one as a plain loop (PERFORMANCE.md, optimization 46).
    """
    cdef Py_ssize_t t = n_items // grain
    if cap <= 0:
        cap = omp_get_max_threads()
    if t > cap:
        t = cap
    return <int>t if t > 1 else 1


cdef inline Py_ssize_t heap_chunk(Py_ssize_t n_items, int nt) noexcept nogil:
    """Chunk for a dynamic schedule whose item w writes heap row w: up to 8
    consecutive rows per thread, so two threads rarely update heaps in the
    same cache line (measured: IndexPQFastScan at 2 threads went from 1.26x
    to 1.55x its 1-thread speed), while every thread still gets four chunks."""
    if nt < 1:
        nt = 1
    return max(1, min(8, n_items // (4 * nt)))


cdef struct Selector:
    int kind               # 0: every id, 1: lo <= id < hi, 2: id in ids[0:n] (sorted),
                           # 3: the tree of nodes below (see selectors.py)
    int64_t lo
    int64_t hi
    const int64_t* ids
    Py_ssize_t n
    const int64_t* nodes   # kind 3: rows (kind, a, b, c); children precede parents
    const int64_t* data    # kind 3: the id sets and bitmaps the nodes refer to
    Py_ssize_t root


cdef inline float* thread_rows(void** block, int rows, Py_ssize_t cols,
                               Py_ssize_t* stride) except NULL:
    """Scratch space of a kernel call: `rows` rows (one per thread) of at
    least `cols` floats, each starting on a cache line and ending at least a
    line before the next, so a thread writing the end of its row (per-block
    sums, say) does not evict the start of the next thread's (measured:
    IndexPQFastScan at 2 threads scaled 1.26x, not 2x).  Sets *stride to the
    floats between rows and *block to what the caller must free().

    Allocated per call, so concurrent calls share nothing; with malloc rather
    than numpy, a one-query search spends no Python work on it (1.3 us a call
    before, PERFORMANCE.md, optimization 46).
    """
    stride[0] = (max(cols, 1) + 15) // 16 * 16 + 16
    block[0] = malloc((max(rows, 1) * stride[0] + 16) * sizeof(float))
    if block[0] == NULL:
        raise MemoryError()
    return <float*>((<size_t>block[0] + 63) & ~(<size_t>63))


cdef inline Py_ssize_t nearest_exact(const float* xs, const float* y, Py_ssize_t dsub,
                                     Py_ssize_t ksub, const float* dist,
                                     float thr) noexcept nogil:
    """First j minimizing ||xs - y_j||^2 in float64 among the j with
    dist[j] <= thr (y: the (ksub, dsub) codebook); -1 when there is none."""
    cdef Py_ssize_t j, s, best = -1
    cdef double e, diff, ebest = 0
    for j in range(ksub):
        if dist[j] <= thr:
            e = 0
            for s in range(dsub):
                diff = <double>xs[s] - <double>y[j * dsub + s]
                e = e + diff * diff
            if best < 0 or e < ebest:
                best = j
                ebest = e
    return best


cdef inline Py_ssize_t nearest_of(const float* xs, const float* y, Py_ssize_t dsub,
                                  Py_ssize_t ksub, const float* dist, float thr,
                                  pqfast_count_le_fn count_le) noexcept nogil:
    """The code of xs given dist, an approximation of its distances (in any
    form sharing the argmin) whose errors are below thr - min(dist): the one
    candidate within thr when there is one (the usual case), else the exact
    choice among the candidates."""
    cdef int last
    if count_le(dist, ksub, thr, &last) == 1:
        return last
    return nearest_exact(xs, y, dsub, ksub, dist, thr)


cdef inline bint in_sorted(const int64_t* ids, Py_ssize_t n, int64_t idx) noexcept nogil:
    """Binary search of idx in ids[0:n], sorted ascending."""
    cdef Py_ssize_t a = 0, b = n, mid
    while a < b:
        mid = (a + b) // 2
        if ids[mid] < idx:
            a = mid + 1
        else:
            b = mid
    return a < n and ids[a] == idx


cdef inline bint node_allows(const int64_t* nodes, const int64_t* data, Py_ssize_t i,
                             int64_t idx) noexcept nogil:
    """Evaluate selector node i for idx (recursion depth = tree depth)."""
    cdef const int64_t* nd = nodes + 4 * i
    cdef int64_t kind = nd[0]
    if kind == 0:
        return True
    if kind == 1:
        return nd[1] <= idx < nd[2]
    if kind == 2:
        return in_sorted(data + nd[1], nd[2], idx)
    if kind == 3:
        return not node_allows(nodes, data, nd[1], idx)
    if kind == 4:
        return (node_allows(nodes, data, nd[1], idx)
                and node_allows(nodes, data, nd[2], idx))
    if kind == 5:
        return (node_allows(nodes, data, nd[1], idx)
                or node_allows(nodes, data, nd[2], idx))
    if kind == 6:
        return (node_allows(nodes, data, nd[1], idx)
                != node_allows(nodes, data, nd[2], idx))
    # kind 7, bitmap of nd[2] bytes
    if idx < 0 or (idx >> 3) >= nd[2]:
        return False
    return ((<const uint8_t*>(data + nd[1]))[idx >> 3] >> (idx & 7)) & 1


cdef inline bint sel_allows(const Selector* s, int64_t idx) noexcept nogil:
    """Whether the id filter lets `idx` into the results."""
    if s.kind == 0:
        return True
    if s.kind == 1:
        return s.lo <= idx < s.hi
    if s.kind == 2:
        return in_sorted(s.ids, s.n, idx)
    return node_allows(s.nodes, s.data, s.root, idx)


cdef inline bint pair_less(float d1, int64_t i1, float d2, int64_t i2) noexcept nogil:
    return d1 < d2 or (d1 == d2 and i1 < i2)


cdef inline void heap_init(float* hd, int64_t* hi, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(k):
        hd[i] = FLT_MAX
        hi[i] = -1


cdef inline void heap_sift_down(float* hd, int64_t* hi, Py_ssize_t k,
                                Py_ssize_t i, float d, int64_t idx) noexcept nogil:
    """Place (d, idx) at slot i of a max-heap of size k, moving larger children up."""
    cdef Py_ssize_t child
    while True:
        child = 2 * i + 1
        if child >= k:
            break
        if child + 1 < k and pair_less(hd[child], hi[child], hd[child + 1], hi[child + 1]):
            child = child + 1
        if pair_less(hd[child], hi[child], d, idx):
            break
        hd[i] = hd[child]
        hi[i] = hi[child]
        i = child
    hd[i] = d
    hi[i] = idx


cdef inline void heap_push(float* hd, int64_t* hi, Py_ssize_t k,
                           float d, int64_t idx) noexcept nogil:
    """Offer (d, idx) to a full max-heap of size k (padding counts as full)."""
    if pair_less(d, idx, hd[0], hi[0]):
        heap_sift_down(hd, hi, k, 0, d, idx)


cdef enum:
    RADIX_SORT_MIN_K = 48   # from here a radix sort beats the heap's sift-downs
    RADIX_SORT_MAX_K = 256  # up to here its scratch lives on the stack (7 KiB)


cdef inline void heap_sort(float* hd, int64_t* hi, Py_ssize_t k) noexcept nogil:
    """Turn a max-heap into an array sorted ascending by (distance, id).

    For RADIX_SORT_MIN_K <= k <= RADIX_SORT_MAX_K the entries are radix-sorted
    (pqfast_sort_pairs, same order): heap-sorting k = 100 pays ~2 log2(k)
    mispredicted branches an entry, about 3 us a query."""
    cdef Py_ssize_t end
    cdef float d
    cdef int64_t idx
    cdef float dcopy[RADIX_SORT_MAX_K]
    cdef int64_t icopy[RADIX_SORT_MAX_K]
    cdef uint32_t keys[4 * RADIX_SORT_MAX_K]
    if RADIX_SORT_MIN_K <= k <= RADIX_SORT_MAX_K:
        memcpy(dcopy, hd, k * sizeof(float))
        memcpy(icopy, hi, k * sizeof(int64_t))
        pqfast_sort_pairs(dcopy, icopy, k, keys, hd, hi)
        return
    for end in range(k - 1, 0, -1):
        d = hd[end]
        idx = hi[end]
        hd[end] = hd[0]
        hi[end] = hi[0]
        heap_sift_down(hd, hi, end, 0, d, idx)


cdef enum:
    # From this k on, the k smallest of a row are selected (select_smallest),
    # not kept in a heap: at k = 16 the two cost the same (coarse search of
    # 1000 queries against 379 centroids), from k = 32 selection is faster.
    SELECT_MIN_K = 17
    # Above this k the 8-bit scans keep the heap: a Reservoir takes 64 k bytes
    # (IndexPQ holds eight a thread), and a heap's branches matter less there.
    RESERVOIR_MAX_K = 4096


cdef inline Py_ssize_t round16(Py_ssize_t n) noexcept nogil:
    return (n + 15) // 16 * 16


cdef inline Py_ssize_t select_columns(Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Scratch floats to select k of up to n pairs (select_in): distances, ids
    (select_ids: two floats each) and keys.  Each part is a multiple of 16
    floats, so what follows stays 64-byte aligned."""
    return round16(n) + round16(2 * n) + round16(max(4 * k, n))


cdef inline int64_t* select_ids(float* buf, Py_ssize_t n) noexcept nogil:
    """The ids of a select_columns(n, k) buffer, after its distances at buf."""
    return <int64_t*>(buf + round16(n))


cdef inline void select_smallest(float* sd, int64_t* sid, Py_ssize_t n, Py_ssize_t k,
                                 uint32_t* keys, float* hd, int64_t* hi,
                                 bint sort) noexcept nogil:
    """The k smallest (distance, id) of the n pairs sd, sid (reordered) into
    the padded heap row hd, hi: sorted when `sort`, else heapified (for
    merge_heaps).  keys: room for max(4k, n).

    Exactly the pairs and the order a heap gives, but branch-free
    (pqfast_select_k, pqfast_sort_pairs) where a heap pays about log2(k)
    mispredicted branches per pair: 1000 queries against 379 centroids,
    k = 128, took 13.8 ms, 10 of them in the heap (PERFORMANCE.md, 48).
    """
    cdef float td
    cdef int64_t ti
    cdef Py_ssize_t j
    if n > k:
        pqfast_select_k(sd, sid, n, k, keys, &td, &ti)
        n = k
    if sort:
        pqfast_sort_pairs(sd, sid, n, keys, hd, hi)
        return
    for j in range(n):
        hd[j] = sd[j]
        hi[j] = sid[j]
    for j in range(k // 2 - 1, -1, -1):
        heap_sift_down(hd, hi, k, j, hd[j], hi[j])



# Candidates of one query for large k: entries must be below (thr_d, thr_i);
# room for 4k, so a selection (pqfast_select_k, O(4k)) comes every 3k
# candidates or more, and the k smallest are kept, as a heap would keep them
# but without its mispredicted branches.  `keys` (4k) is also the scratch of
# the final sort (pqfast_sort_pairs, 4 per entry); `qthr` is the fast scan's
# quantized threshold.
cdef inline void select_in(float* buf, Py_ssize_t cap, Py_ssize_t n, Py_ssize_t k,
                           float* hd, int64_t* hi, bint sort) noexcept nogil:
    """select_smallest over the first n pairs of a select_columns(cap, k)
    buffer: distances at buf, ids at select_ids(buf, cap), then the keys."""
    select_smallest(buf, select_ids(buf, cap), n, k,
                    <uint32_t*>(buf + round16(cap) + round16(2 * cap)), hd, hi, sort)


cdef struct Reservoir:
    float* d
    int64_t* i
    uint32_t* keys
    Py_ssize_t n
    Py_ssize_t k
    float thr_d
    int64_t thr_i
    uint32_t qthr


cdef inline Py_ssize_t reservoir_columns(Py_ssize_t k) noexcept nogil:
    """Floats a Reservoir for k takes (reservoir_at): a header, then 4k
    distances, ids and keys; a multiple of 16."""
    return 16 + 16 * k


cdef inline Reservoir* reservoir_at(float* at, Py_ssize_t k) noexcept nogil:
    """An empty Reservoir for k at `at` (reservoir_columns(k) floats, 64-byte
    aligned)."""
    cdef Reservoir* r = <Reservoir*>at
    r.d = at + 16
    r.i = <int64_t*>(at + 16 + 4 * k)
    r.keys = <uint32_t*>(at + 16 + 12 * k)
    r.n = 0
    r.k = k
    r.thr_d = FLT_MAX
    r.thr_i = INT64_MAX
    r.qthr = 65535
    return r


cdef inline void reservoir_push(Reservoir* r, float d, int64_t idx) noexcept nogil:
    """Keep (d, idx), below the threshold; a full reservoir keeps its k smallest."""
    r.d[r.n] = d
    r.i[r.n] = idx
    r.n = r.n + 1
    if r.n == 4 * r.k:
        pqfast_select_k(r.d, r.i, r.n, r.k, r.keys, &r.thr_d, &r.thr_i)
        r.n = r.k


cdef inline void reservoir_finish(Reservoir* r, float* hd, int64_t* hi,
                                  bint sort) noexcept nogil:
    """Put the k smallest candidates into (hd, hi), initialised to padding:
    sorted by (distance, id) when `sort` (padding last), otherwise as a heap
    for a later merge (select_smallest)."""
    select_smallest(r.d, r.i, r.n, r.k, r.keys, hd, hi, sort)


cdef inline Reservoir* row_reservoir(float* at, Py_ssize_t k) noexcept nogil:
    """A query's Reservoir at `at` (reservoir_columns(k) floats, 64-byte
    aligned) when k calls for one (use_reservoir), else NULL: the heap is used."""
    return reservoir_at(at, k) if use_reservoir(k) else NULL


cdef inline Py_ssize_t row_reservoir_columns(Py_ssize_t k) noexcept nogil:
    """Floats row_reservoir needs."""
    return reservoir_columns(k) if use_reservoir(k) else 0


cdef inline bint use_reservoir(Py_ssize_t k) noexcept nogil:
    """Whether an 8-bit scan for k keeps its candidates in a Reservoir."""
    return SELECT_MIN_K <= k <= RESERVOIR_MAX_K


cdef inline void finish_row(Reservoir* res, float* hd, int64_t* hi, Py_ssize_t k,
                            bint sort) noexcept nogil:
    """End a query's scan: the k best of its Reservoir (when not NULL) into the
    padded row hd, hi, sorted when `sort`, else heapified; without one, the
    heap sorted when `sort`."""
    if res != NULL:
        reservoir_finish(res, hd, hi, sort)
    elif sort:
        heap_sort(hd, hi, k)

cdef inline void heap_merge(float* hd, int64_t* hi, const float* od,
                            const int64_t* oi, Py_ssize_t k) noexcept nogil:
    """Offer every entry of another heap of size k to this one."""
    cdef Py_ssize_t j
    for j in range(k):
        if oi[j] >= 0:
            heap_push(hd, hi, k, od[j], oi[j])


cdef inline float adc_distance(const float* table, const uint8_t* code,
                               Py_ssize_t M, int nbits, Py_ssize_t ksub) noexcept nogil:
    """Sum table[m, code_m] over the M sub-codes of one packed code (any nbits).

    Codes are a little-endian bit stream, sub-code m at bits
    [m*nbits, (m+1)*nbits), exactly as faiss packs them.
    """
    cdef Py_ssize_t m, bit = 0, byte
    cdef uint32_t v, mask = (1u << nbits) - 1, shift
    cdef float d = 0
    for m in range(M):
        byte = bit >> 3
        shift = bit & 7
        v = code[byte]
        if shift + nbits > 8:
            v = v | (<uint32_t>code[byte + 1] << 8)
            if shift + nbits > 16:
                v = v | (<uint32_t>code[byte + 2] << 16)
        d = d + table[m * ksub + ((v >> shift) & mask)]
        bit = bit + nbits
    return d


cdef enum:
    SCAN_BLOCK = 256  # codes whose distances are computed before heap filtering


cdef inline void adc_block(const float* table, const float* table2,
                           const uint8_t* codes, Py_ssize_t nb, Py_ssize_t code_size,
                           Py_ssize_t M, int nbits, Py_ssize_t ksub, float base,
                           float* dist) noexcept nogil:
    """dist[i] = base + ADC distance of code i, for nb <= SCAN_BLOCK codes.

    With table2 (8-bit codes only) the table is table + table2, summed entry
    by entry while scanning (see pqfast_adc8_block2)."""
    cdef Py_ssize_t i
    if table2 != NULL:
        pqfast_adc8_block2(table, table2, codes, nb, M, base, dist)
    elif nbits == 8:
        pqfast_adc8_block(table, codes, nb, M, base, dist)
    elif nbits == 4:
        pqfast_adc4_block(table, codes, nb, M, code_size, base, dist)
    else:
        for i in range(nb):
            dist[i] = base + adc_distance(table, codes + i * code_size, M, nbits, ksub)


cdef inline void scan_codes(const float* table, const float* table2,
                            const uint8_t* codes,
                            const int64_t* ids, int64_t id0, Py_ssize_t n,
                            Py_ssize_t code_size, Py_ssize_t M, int nbits,
                            Py_ssize_t ksub, float base, float* hd, int64_t* hi,
                            Py_ssize_t k, const Selector* sel,
                            const float* terms=NULL, Reservoir* res=NULL) noexcept nogil:
    """Push base + ADC distance (+ terms[i], when given) of n codes into the heap
    (into `res` instead, when given).

    The id of code i is ids[i], or id0 + i when ids is NULL; ids the selector
    rejects are skipped (tested only for codes that would enter).  Distances are
    computed a block at a time; a block whose minimum cannot enter the heap
    costs no further work.
    """
    cdef float dist[SCAN_BLOCK]
    cdef Py_ssize_t b0, nb, i
    b0 = 0
    while b0 < n:
        nb = min(<Py_ssize_t>SCAN_BLOCK, n - b0)
        adc_block(table, table2, codes + b0 * code_size, nb, code_size, M, nbits, ksub,
                  base, dist)
        if terms != NULL:
            for i in range(nb):
                dist[i] = dist[i] + terms[b0 + i]
        offer_block(dist, nb, ids + b0 if ids != NULL else NULL, id0 + b0, hd, hi, k,
                    sel, res)
        b0 = b0 + nb


cdef inline void offer_block(const float* dist, Py_ssize_t nb, const int64_t* ids,
                             int64_t id0, float* hd, int64_t* hi, Py_ssize_t k,
                             const Selector* sel, Reservoir* res=NULL) noexcept nogil:
    """Push nb distances into the heap (into `res` instead, when given): the id
    of dist[j] is ids[j], or id0 + j when ids is NULL; ids the selector rejects
    are skipped (tested only for distances that would enter), and a block whose
    minimum cannot enter costs one pass."""
    cdef Py_ssize_t j
    cdef int64_t idx
    if res != NULL:
        if pqfast_min(dist, nb) <= res.thr_d:
            for j in range(nb):
                if dist[j] <= res.thr_d:
                    idx = ids[j] if ids != NULL else id0 + j
                    if (pair_less(dist[j], idx, res.thr_d, res.thr_i)
                            and sel_allows(sel, idx)):
                        reservoir_push(res, dist[j], idx)
        return
    if pqfast_min(dist, nb) <= hd[0]:
        for j in range(nb):
            if dist[j] <= hd[0]:
                idx = ids[j] if ids != NULL else id0 + j
                if pair_less(dist[j], idx, hd[0], hi[0]) and sel_allows(sel, idx):
                    heap_sift_down(hd, hi, k, 0, dist[j], idx)


cdef inline void scan_codes_multi(pqfast_adc_multi_fn adc, const float* T,
                                  const uint8_t* codes, int64_t id0,
                                  Py_ssize_t n, Py_ssize_t code_size, Py_ssize_t M,
                                  const float* base,
                                  Py_ssize_t nq, float* hd, int64_t* hi,
                                  Py_ssize_t hstride, Py_ssize_t k,
                                  const Selector* sel,
                                  Reservoir** res=NULL) noexcept nogil:
    """scan_codes for nq <= PQFAST_MQ queries at once over 8- or 4-bit codes
    (adc from pqfast_adc_multi_impl).

    T holds their tables interleaved (pqfast_interleave8), base[q] their
    constants; code i's id is id0 + i; query q's heap is (hd + q * hstride,
    hi + q * hstride).  The kernel flags the lanes at or below the thresholds
    of the block's start (which only loosen what is visited); each flagged
    pair is then offered exactly as scan_codes offers it, so the heaps end
    the same.  With `res`, query q's candidates go to res[q] instead.
    """
    cdef float dist[SCAN_BLOCK * PQFAST_MQ]
    cdef uint8_t hit[SCAN_BLOCK]
    cdef float thr[PQFAST_MQ]
    cdef float b[PQFAST_MQ]
    cdef Py_ssize_t b0 = 0, nb, j, q
    cdef unsigned h
    cdef float dj
    cdef float* hq
    cdef int64_t* iq
    cdef int64_t idx
    for q in range(PQFAST_MQ):
        b[q] = base[q] if q < nq else 0
        thr[q] = -FLT_MAX if q >= nq else (res[q].thr_d if res != NULL
                                           else hd[q * hstride])
    while b0 < n:
        nb = min(<Py_ssize_t>SCAN_BLOCK, n - b0)
        adc(T, codes + b0 * code_size, nb, M, b, thr, dist, hit)
        for j in range(nb):
            h = hit[j]
            q = 0
            while h != 0:
                if h & 1:
                    dj = dist[j * PQFAST_MQ + q]
                    hq = hd + q * hstride
                    iq = hi + q * hstride
                    idx = id0 + b0 + j
                    if res != NULL:
                        if (pair_less(dj, idx, res[q].thr_d, res[q].thr_i)
                                and sel_allows(sel, idx)):
                            reservoir_push(res[q], dj, idx)
                    elif pair_less(dj, idx, hq[0], iq[0]) and sel_allows(sel, idx):
                        heap_sift_down(hq, iq, k, 0, dj, idx)
                h = h >> 1
                q = q + 1
        for q in range(nq):
            thr[q] = res[q].thr_d if res != NULL else hd[q * hstride]
        b0 = b0 + nb


cdef inline float sqnorm(const float* x, Py_ssize_t d) noexcept nogil:
    """||x||^2.  (A function, so callers inside prange get a private result:
    Cython shares a variable that the loop body only writes through a pointer.)"""
    cdef float out
    pqfast_dots(x, x, 1, d, &out)
    return out


cdef inline Py_ssize_t nearest_columns(Py_ssize_t nlist,
                                      Py_ssize_t nprobe) noexcept nogil:
    """Scratch floats nearest_lists needs."""
    return select_columns(nlist, nprobe) if nprobe >= SELECT_MIN_K else round16(nlist)


cdef inline void nearest_lists(const float* x, const float* cents, const float* cnorms,
                               Py_ssize_t nlist, Py_ssize_t d, bint l2, float* dist,
                               float* hd, int64_t* hi, Py_ssize_t nprobe) noexcept nogil:
    """The nprobe nearest coarse centroids of x, sorted by (term, list number):
    hi their list numbers, hd their coarse terms (||x - c||^2, or -<x, c>).

    The same arithmetic as the flat quantizer's search of a few queries
    (_topk.knn: pqfast_dots, then pqfast_l2_from_dots), so the same probes,
    and the same selection.  dist: nearest_columns(nlist, nprobe) floats.
    (The one-call IVF searches of _ivf and _fastscan start with it.)"""
    cdef Py_ssize_t j
    cdef int64_t* ids
    pqfast_dots(x, cents, nlist, d, dist)
    if l2:
        pqfast_l2_from_dots(dist, cnorms, sqnorm(x, d), nlist)
    else:
        pqfast_negate(dist, nlist)
    heap_init(hd, hi, nprobe)
    if nprobe >= SELECT_MIN_K:
        ids = select_ids(dist, nlist)
        for j in range(nlist):
            ids[j] = j
        select_in(dist, nlist, nlist, nprobe, hd, hi, True)
        return
    for j in range(nlist):
        if pair_less(dist[j], j, hd[0], hi[0]):
            heap_sift_down(hd, hi, nprobe, 0, dist[j], j)
    heap_sort(hd, hi, nprobe)


cdef inline void query_tables(const float* x, Py_ssize_t nq, Py_ssize_t d,
                              const float* cbt, const float* ynorm, Py_ssize_t M,
                              Py_ssize_t dsub, Py_ssize_t ksub, bint l2,
                              float* tables) noexcept nogil:
    """Exhaustive-search tables of nq consecutive queries, (nq, M, ksub).

    L2: table[m, j] = ||y_mj||^2 - 2<x_m, y_mj> (the constant ||x||^2 is the
    caller's).  Inner product: table[m, j] = -<x_m, y_mj>.
    """
    cdef Py_ssize_t q, mk = M * ksub
    for q in range(nq):
        if l2:
            memcpy(tables + q * mk, ynorm, mk * sizeof(float))
        else:
            memset(tables + q * mk, 0, mk * sizeof(float))
    pqfast_dot_tables(x, d, nq, cbt, M, dsub, ksub, -2.0 if l2 else -1.0, tables, mk)


cdef inline const float* list_table(const float* qtab, const float* precomp,
                                    const float* ynorm, const float* centroid,
                                    const float* cbt, Py_ssize_t M, Py_ssize_t dsub,
                                    Py_ssize_t ksub, bint l2,
                                    float* ltab) noexcept nogil:
    """Table for one probed list of an IVF index by residual (see _ivf.pyx).

    L2: query table + the list term, from the precomputed table when there is
    one (precomp non-NULL) else computed from the centroid, written to ltab.
    Inner product: the query table itself.
    """
    if not l2:
        return qtab
    pqfast_add(qtab, precomp if precomp != NULL else ynorm, M * ksub, ltab)
    if precomp == NULL:
        pqfast_dot_table(centroid, cbt, M, dsub, ksub, 2.0, ltab)
    return ltab


cdef inline void gemm_abt(const float* a, int lda, int na, const float* b, int ldb,
                          int nb, int dim, float* c, bint own) noexcept nogil:
    """c[i, j] = <a_i, b_j>, c row-major (na, nb); a_i, b_j rows of length dim.

    own (pqfast_gemm_own): pqfast's AVX-512 GEMM (simd.h), else BLAS, where
    row-major C = A B^T is column-major C^T = B A^T, hence the swapped
    operands.  A GEMM with a handful of rows runs far below BLAS's speed
    (measured: 10 us for 1 x 64 x 384), so few rows go through a plain SIMD
    dot-product loop.
    """
    cdef Py_ssize_t i
    if na <= 4 and ldb == dim:
        for i in range(na):
            pqfast_dots(a + i * lda, b, nb, dim, c + i * nb)
        return
    if own:
        pqfast_gemm_abt(a, lda, na, b, ldb, nb, dim, c)
        return
    cdef char ta = b'T'
    cdef char tb = b'N'
    cdef float one = 1
    cdef float zero = 0
    sgemm(&ta, &tb, &nb, &na, &dim, &one, <float*>b, &ldb, <float*>a, &lda,
          &zero, c, &nb)
