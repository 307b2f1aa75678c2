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
            let last = (rows - 1) * self.row_stride + (cols - 1) * self.col_stride;
            assert!(
                last < self.data.len(),
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
    assert!(dst.len() >= m * n, "matmul: the output ({m}×{n}) exceeds its slice");
    a.check(m, k, "the left operand");
    b.check(k, n, "the right operand");
    // SAFETY: every element the strides address lies within its slice (checked above), and
    // `dst` is a unique borrow, so it overlaps neither operand.
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
}
