//! A one-time hook cell, usable from a `static`.

use crate::{Function, HookError, Interceptor, TypedHook};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Holds one hook for the life of the process. The first `install` tries once; its failure
/// is final and returned by every later call, so a failed hook is never retried and never
/// leaks trampoline space. [`HookCell::original`] is valid before the detour can first run.
pub struct HookCell<F: Function> {
    hook: OnceLock<Result<TypedHook<F>, HookError>>,
    original: AtomicU64,
}

impl<F: Function> Default for HookCell<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Function> HookCell<F> {
    /// An empty cell.
    pub const fn new() -> Self {
        HookCell { hook: OnceLock::new(), original: AtomicU64::new(0) }
    }

    /// Hooks `target` with `detour`, once: later calls return the first outcome.
    ///
    /// # Safety
    /// As for [`Interceptor::hook_fn`].
    pub unsafe fn install(&self, interceptor: &Interceptor, target: F, detour: F) -> Result<&TypedHook<F>, HookError> {
        self.install_with(interceptor, || Ok(target.addr()), detour)
    }

    /// Hooks `symbol` of `module` with `detour`, once.
    ///
    /// # Safety
    /// As for [`Interceptor::hook_symbol_fn`].
    pub unsafe fn install_symbol(
        &self,
        interceptor: &Interceptor,
        module: &str,
        symbol: &str,
        detour: F,
    ) -> Result<&TypedHook<F>, HookError> {
        self.install_with(interceptor, || interceptor.resolve(module, symbol), detour)
    }

    fn install_with(
        &self,
        interceptor: &Interceptor,
        target: impl FnOnce() -> Result<u64, HookError>,
        detour: F,
    ) -> Result<&TypedHook<F>, HookError> {
        let outcome = self.hook.get_or_init(|| {
            let mut tx = interceptor.transaction();
            // SAFETY: the caller of the public methods vouches for target and detour.
            unsafe { tx.hook_disabled(target()?, detour.addr()) };
            let hook = tx.commit()?.pop().expect("one hook");
            // Publish the original before the detour can run.
            self.original.store(hook.trampoline(), Ordering::Release);
            hook.enable()?;
            Ok(TypedHook::new(hook))
        });
        outcome.as_ref().map_err(Clone::clone)
    }

    /// The original behaviour, once the hook is installed.
    pub fn original(&self) -> Option<F> {
        match self.original.load(Ordering::Acquire) {
            0 => None,
            // SAFETY: the trampoline of a hook of type `F`.
            addr => Some(unsafe { F::from_addr(addr) }),
        }
    }

    /// The hook, if installed.
    pub fn get(&self) -> Option<&TypedHook<F>> {
        self.hook.get().and_then(|r| r.as_ref().ok())
    }
}
