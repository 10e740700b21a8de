//! Signal flags for tools that wait: SIGINT/SIGTERM set a flag the wait loop
//! checks (a waiting tool exits 130 on SIGINT).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// A flag set by SIGINT or SIGTERM.
pub fn interrupt_flag() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&flag))?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&flag))?;
    Ok(flag)
}
