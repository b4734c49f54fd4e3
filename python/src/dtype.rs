//! Element types: numpy dtype <-> wdb `DType`, through the `.npy` descr both understand,
//! and the bytes of one Python number as an element (the fast path of `a[i] = v`).

use numpy::{PyArrayDescr, PyArrayDescrMethods};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyFloat, PyInt};
use wdb::DType;

use crate::errors::{invalid, OrPy};

fn np_format(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static M: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    M.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("numpy.lib.format")?.unbind())
    })
    .map(|m| m.bind(py))
}

/// The wdb element type of a numpy dtype (anything `numpy.dtype()` accepts).
pub(crate) fn dtype_of<'py>(
    py: Python<'py>,
    obj: &Bound<'py, PyAny>,
) -> PyResult<(DType, Bound<'py, PyArrayDescr>)> {
    let descr = PyArrayDescr::new(py, obj)?;
    if descr.has_object() {
        return Err(invalid(
            py,
            format!("dtype {descr} holds Python objects: wdb stores fixed-size plain data only"),
        ));
    }
    let d = np_format(py)?.call_method1("dtype_to_descr", (&descr,))?;
    let text: String = d.repr()?.extract()?;
    let dt = DType::from_descr(&text).map_err(|e| {
        invalid(
            py,
            format!(
                "dtype {descr} is not supported: {e}. wdb stores bool, little-endian \
                 integers (1..8 bytes), float16/32/64, complex64/128 and structured dtypes \
                 of those"
            ),
        )
    })?;
    Ok((dt, descr))
}

/// The numpy dtype of a wdb element type.
pub(crate) fn descr_of<'py>(py: Python<'py>, dt: &DType) -> PyResult<Bound<'py, PyArrayDescr>> {
    let text = dt.to_descr().py(py)?;
    let value = py.import("ast")?.call_method1("literal_eval", (text,))?;
    let d = np_format(py)?.call_method1("descr_to_dtype", (value,))?;
    Ok(d.cast_into::<PyArrayDescr>()?)
}

/// The bytes of a Python `int`/`float` (or NumPy scalar) as one element of a numeric
/// scalar type, when the conversion is exact or a float rounding (as NumPy does it);
/// `None` for anything else, which then goes through NumPy's own conversion (and its
/// errors). The fast path of `a[i] = v`.
// `as f64` on an f64 is the F64 row of the table below.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn scalar_bytes(dt: &DType, value: &Bound<'_, PyAny>) -> Option<Vec<u8>> {
    use wdb::array::Scalar as S;
    let DType::Scalar(s) = dt else { return None };
    let is_float = value.is_instance_of::<PyFloat>();
    let is_int = value.is_instance_of::<PyInt>() && !value.is_instance_of::<PyBool>();
    if !is_float && !is_int {
        return None;
    }
    // The table: an integer type takes a Python int that fits exactly; a float type
    // takes an int or a float, rounded to the type.
    macro_rules! encode {
        (ints: $($int:ident => $it:ty),*; floats: $($float:ident => $ft:ty),*) => {
            match s {
                $(S::$int => {
                    if !is_int {
                        return None;
                    }
                    let v: i128 = value.extract().ok()?;
                    <$it>::try_from(v).ok()?.to_le_bytes().to_vec()
                })*
                $(S::$float => (value.extract::<f64>().ok()? as $ft).to_le_bytes().to_vec(),)*
                _ => return None,
            }
        };
    }
    Some(encode!(
        ints: I8 => i8, I16 => i16, I32 => i32, I64 => i64,
              U8 => u8, U16 => u16, U32 => u32, U64 => u64;
        floats: F32 => f32, F64 => f64
    ))
}
