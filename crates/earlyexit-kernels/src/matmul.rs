//! Single-precision matrix products for the CPU paths, on the `gemm` crate (the GEMM that Burn's
//! `flex` uses), behind bounds checks.
//!
//! Why: the crate's entry point takes raw pointers, strides, scaling factors and conjugation
//! flags (19 arguments); the compiled inference path and the native training pass need only
//! `dst = a·b` or `dst += a·b` on row-major or transposed operands.

/// A read-only matrix operand: its values and the strides between rows and between columns.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major matrix whose rows hold `row_len` values.
    pub fn row_major(data: &'a [f32], row_len: usize) -> Self {
        Self {
            data,
            row_stride: row_len,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix whose rows hold `row_len` values: element `(i, j)` is
    /// `data[j·row_len + i]`.
    pub fn transposed(data: &'a [f32], row_len: usize) -> Self {
        Self {
            data,
            row_stride: 1,
            col_stride: row_len,
        }
    }

    /// Panics unless a `rows × cols` matrix with these strides lies within `data`.
    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows > 0 && cols > 0 {
            let last = (rows - 1)
                .checked_mul(self.row_stride)
                .and_then(|r| (cols - 1).checked_mul(self.col_stride)?.checked_add(r));
            assert!(
                last.is_some_and(|l| l < self.data.len()),
                "matmul: {what} ({rows}×{cols}) exceeds its slice"
            );
        }
    }
}

/// `dst` (`m × n`, row-major) `= a · b`, or `dst += a · b` when `accumulate`; `a` is `m × k`, `b` is
/// `k × n`.
///
/// # Panics
/// If an operand or `dst` is shorter than its shape says.
#[allow(clippy::too_many_arguments)] // the three sizes, the output and its mode, two operands, threads
pub fn matmul(
    dst: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
    a: MatRef,
    b: MatRef,
    par: gemm::Parallelism,
) {
    assert!(
        m.checked_mul(n).is_some_and(|len| dst.len() >= len),
        "matmul: the output ({m}×{n}) exceeds its slice"
    );
    a.check(m, k, "the left operand");
    b.check(k, n, "the right operand");
    // SAFETY: `gemm::gemm` reads `lhs[i·rs + j·cs]` for `i < m, j < k`, `rhs[i·rs + j·cs]` for
    // `i < k, j < n`, and reads and writes `dst[i·n + j]` for `i < m, j < n`; it does nothing
    // when `m` or `n` is 0 and reads neither operand when `k` is 0.
    // `MatRef::check` asserted above that the last element `(rows-1)·row_stride +
    // (cols-1)·col_stride` of `a` (`m × k`) and of `b` (`k × n`) is inside its slice whenever both
    // dimensions are non-zero, and `dst.len() ≥ m·n` covers `(m-1)·n + n-1`. Those in-bounds
    // offsets are below `isize::MAX`, so the `as isize` stride casts are exact for every stride
    // that multiplies a non-zero index. `dst` is a unique borrow, so it overlaps neither `a.data`
    // nor `b.data`, and all three are initialised `f32`, a type `gemm` supports. The sizes in
    // these checks are computed with `checked_mul`/`checked_add`: a size that would wrap `usize`
    // fails the assert instead of passing it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_of_row_major_and_transposed_operands() {
        // a = [[1, 2, 3], [4, 5, 6]] (2×3), b = [[1, 0], [0, 1], [1, 1]] (3×2).
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let mut dst = [9.0f32; 4];
        let none = gemm::Parallelism::None;
        matmul(
            &mut dst,
            2,
            2,
            3,
            false,
            MatRef::row_major(&a, 3),
            MatRef::row_major(&b, 2),
            none,
        );
        assert_eq!(dst, [4.0, 5.0, 10.0, 11.0]);
        // aᵀ·aᵀᵀ: a stored row-major (2×3) read as its transpose (3×2), times a (2×3).
        let mut g = [1.0f32; 9];
        matmul(
            &mut g,
            3,
            3,
            2,
            true,
            MatRef::transposed(&a, 3),
            MatRef::row_major(&a, 3),
            none,
        );
        assert_eq!(g, [18.0, 23.0, 28.0, 23.0, 30.0, 37.0, 28.0, 37.0, 46.0]);
    }

    #[test]
    #[should_panic(expected = "exceeds its slice")]
    fn short_operands_are_refused() {
        let a = [1.0f32; 5];
        let mut dst = [0.0f32; 4];
        matmul(
            &mut dst,
            2,
            2,
            3,
            false,
            MatRef::row_major(&a, 3),
            MatRef::row_major(&a, 2),
            gemm::Parallelism::None,
        );
    }

    #[test]
    #[should_panic(expected = "exceeds its slice")]
    fn sizes_whose_product_wraps_are_refused() {
        // 2³² × 2³² wraps to 0 in a release build: the check must not read it as "fits".
        let mut dst: Vec<f32> = Vec::new();
        let big = 1usize << 32;
        matmul(
            &mut dst,
            big,
            big,
            0,
            false,
            MatRef::row_major(&[], 0),
            MatRef::row_major(&[], big),
            gemm::Parallelism::None,
        );
    }
}
