#[allow(unused_imports)]
use crate::util::*;
