//! Ctrl-C during `drover simulate`: the first stops the runs, so that what finished is printed; a
//! second exits at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Installs the handler; the flag turns true at the first Ctrl-C.
pub fn install() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    // Without a runtime (it cannot fail short of a broken OS), Ctrl-C simply kills as usual.
    if let Ok(runtime) = runtime {
        std::thread::spawn(move || {
            runtime.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    set.store(true, Ordering::Relaxed);
                    eprintln!(
                        "\ninterrupted: printing what finished (Ctrl-C again to quit at once)"
                    );
                    let _ = tokio::signal::ctrl_c().await;
                }
                std::process::exit(i32::from(crate::exit::INTERRUPTED));
            })
        });
    }
    flag
}
