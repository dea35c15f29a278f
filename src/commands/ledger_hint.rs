//! Where a read-only command's ledger probably is when it is not at the path it was given:
//! the README's quick start (`cfimg migrate examples/images --emulator`) writes
//! `cfimg-emulator.sqlite`, and the next `cfimg status` looks for `cfimg.sqlite`.

use std::path::{Path, PathBuf};

/// The ledger `--emulator` runs (`migrate`, `watch`, `serve`) use unless one is given, so
/// that a demo never mixes with a real account's ledger.
pub(super) const EMULATOR_LEDGER: &str = "cfimg-emulator.sqlite";

/// A hint naming a ledger that exists when none is at `path`: the emulator runs' ledger
/// beside it or in the current folder. `None` when `path` exists or nothing else does.
pub(crate) fn elsewhere(path: &Path) -> Option<String> {
    if path.exists() {
        return None;
    }
    let beside = path.with_file_name(EMULATOR_LEDGER);
    [beside, PathBuf::from(EMULATOR_LEDGER)]
        .into_iter()
        .find(|candidate| candidate.is_file() && candidate != path)
        .map(|found| {
            format!(
                "`cfimg migrate --emulator` keeps its own ledger, {0}: pass --ledger {0}",
                found.display()
            )
        })
}

/// The commands that show what a run recorded in `ledger`, for the end of an emulator run.
pub(crate) fn follow_ups(ledger: &Path) -> String {
    let l = ledger.display();
    format!(
        "see what it recorded with: cfimg status --ledger {l}; cfimg failures --ledger {l}; cfimg export --ledger {l}"
    )
}
