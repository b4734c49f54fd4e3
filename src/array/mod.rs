//! Typed N-d arrays on a virtmem file handle: element types, shape arithmetic, ndarray
//! views, append and resize, and the `.npy` format.
//!
//! This layer knows nothing of storage: [`ArrayCore`] talks to a `virtmem::FileHandle`
//! only, so tests run it on an in-memory fake file. The db layer joins it to the store.
//!
//! - [`ArrayCore`]: the array on a file handle: views, load, append, resize, copies.
//! - [`dtype`]: [`Element`], [`DType`] (catalog bytes, Display, NumPy descr), [`record!`](crate::record).
//! - [`layout`]: [`Layout`], [`Order`]: checked shape arithmetic, rows → bytes → blocks.
//! - [`view`]: ndarray views of rows of a contiguous byte region (the only unsafe code).
//! - [`npy`]: `.npy` headers.

mod array_core;
pub mod dtype;
pub mod layout;
pub mod npy;
mod pylit;
pub mod view;

pub use array_core::{
    bytes_shape, ArrayCore, ZeroTail, MAX_EXPOSE_INVALIDATIONS, MIN_RESERVE_BLKS,
};
pub use dtype::{element_dtype, DType, Element, Field, Scalar};
pub use layout::{Layout, Order};
pub use npy::{read_header, write_header, NpyHeader};

/// Re-exports used by [`record!`](crate::record); not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use bytemuck;
    pub use bytemuck::{Pod, Zeroable};
}

/// Define a plain-data record type that arrays can hold: a `#[repr(C)]` struct that is
/// `bytemuck::Pod` (so padding is rejected at compile time) and implements
/// [`Element`] with one [`Field`] per struct field.
///
/// Derive at least `Clone` and `Copy` (`Pod` requires them); every field type must be an
/// [`Element`] (a scalar or another record). The macro refers to this crate as `::wdb`,
/// so it needs the crate under that name.
///
/// ```
/// wdb::record! {
///     #[derive(Clone, Copy, Debug, PartialEq)]
///     pub struct Point { pub x: f64, pub y: f64 }
/// }
/// use wdb::array::Element;
/// assert_eq!(Point::dtype().to_string(), "{x: f64, y: f64}");
/// ```
///
/// A struct with padding is refused at compile time (bytemuck's `Pod` derive checks
/// that the size is the sum of the field sizes):
///
/// ```compile_fail
/// wdb::record! {
///     #[derive(Clone, Copy)]
///     pub struct Padded { a: u8, b: u64 }
/// }
/// ```
#[macro_export]
macro_rules! record {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $fty:ty ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive($crate::array::__private::Pod, $crate::array::__private::Zeroable)]
        #[bytemuck(crate = "::wdb::array::__private::bytemuck")]
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field : $fty ),+
        }

        impl $crate::array::Element for $name {
            fn dtype() -> $crate::array::DType {
                $crate::array::DType::Record {
                    size: ::core::mem::size_of::<$name>(),
                    fields: ::std::vec![
                        $( $crate::array::Field::new(
                            ::core::stringify!($field),
                            ::core::mem::offset_of!($name, $field),
                            <$fty as $crate::array::Element>::dtype(),
                        ) ),+
                    ],
                }
            }
        }
    };
}

pub use crate::record;
