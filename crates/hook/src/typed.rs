//! Typed hooks for `extern "C"` function pointers.

use crate::{Hook, HookError, Interceptor};
use std::marker::PhantomData;

/// A function pointer type a hook can be typed with: `extern "C" fn(..) -> R` or
/// `unsafe extern "C" fn(..) -> R`, with up to 12 arguments.
///
/// # Safety
/// Only implemented for function pointer types (pointer-sized, plain code addresses).
pub unsafe trait Function: Copy + Send + Sync + 'static {
    /// The code address.
    fn addr(self) -> u64;
    /// The function at `addr`.
    ///
    /// # Safety
    /// `addr` must be code with this type's signature and calling convention.
    unsafe fn from_addr(addr: u64) -> Self;
}

macro_rules! impl_function {
    ($($arg:ident),*) => {
        // SAFETY: a function pointer type.
        unsafe impl<R: 'static $(, $arg: 'static)*> Function for extern "C" fn($($arg),*) -> R {
            fn addr(self) -> u64 {
                self as usize as u64
            }
            unsafe fn from_addr(addr: u64) -> Self {
                // SAFETY: function pointers are pointer-sized; the caller vouches for the code.
                unsafe { std::mem::transmute_copy(&(addr as usize)) }
            }
        }
        // SAFETY: a function pointer type.
        unsafe impl<R: 'static $(, $arg: 'static)*> Function for unsafe extern "C" fn($($arg),*) -> R {
            fn addr(self) -> u64 {
                self as usize as u64
            }
            unsafe fn from_addr(addr: u64) -> Self {
                // SAFETY: as above.
                unsafe { std::mem::transmute_copy(&(addr as usize)) }
            }
        }
    };
}

impl_function!();
impl_function!(A);
impl_function!(A, B);
impl_function!(A, B, C);
impl_function!(A, B, C, D);
impl_function!(A, B, C, D, E);
impl_function!(A, B, C, D, E, G);
impl_function!(A, B, C, D, E, G, H);
impl_function!(A, B, C, D, E, G, H, I);
impl_function!(A, B, C, D, E, G, H, I, J);
impl_function!(A, B, C, D, E, G, H, I, J, K);
impl_function!(A, B, C, D, E, G, H, I, J, K, L);
impl_function!(A, B, C, D, E, G, H, I, J, K, L, M);

/// A hook whose target, detour and original share the function type `F`.
pub struct TypedHook<F: Function> {
    hook: Hook,
    _type: PhantomData<F>,
}

impl<F: Function> std::fmt::Debug for TypedHook<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.hook.fmt(f)
    }
}

impl<F: Function> TypedHook<F> {
    pub(crate) fn new(hook: Hook) -> Self {
        TypedHook { hook, _type: PhantomData }
    }

    /// The original behaviour (next hook down, or the original function).
    pub fn original(&self) -> F {
        // SAFETY: the trampoline behaves as the target, which has type `F`.
        unsafe { F::from_addr(self.hook.trampoline()) }
    }

    /// The untyped hook.
    pub fn hook(&self) -> &Hook {
        &self.hook
    }

    /// Removes the hook.
    pub fn remove(self) -> Result<(), HookError> {
        self.hook.remove()
    }
}

impl Interceptor {
    /// Hooks the function `target` with `detour` of the same type.
    ///
    /// # Safety
    /// Replacing `target` must not break code that relies on it; see [`Interceptor::hook`].
    pub unsafe fn hook_fn<F: Function>(&self, target: F, detour: F) -> Result<TypedHook<F>, HookError> {
        // SAFETY: same signature by construction; the rest is the caller's.
        unsafe { self.hook(target.addr(), detour.addr()) }.map(TypedHook::new)
    }

    /// Hooks `symbol` of the loaded module `module` with `detour`.
    ///
    /// # Safety
    /// `F` must be the symbol's real signature; see [`Interceptor::hook`].
    pub unsafe fn hook_symbol_fn<F: Function>(&self, module: &str, symbol: &str, detour: F) -> Result<TypedHook<F>, HookError> {
        // SAFETY: forwarded from the caller.
        unsafe { self.hook_symbol(module, symbol, detour.addr()) }.map(TypedHook::new)
    }
}
