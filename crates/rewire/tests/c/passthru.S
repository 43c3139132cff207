/* A pass-through detour that counts its calls and keeps every register but the flags. */
.data
.p2align 3
.globl rewire_orig_my_fill
rewire_orig_my_fill:
.Lorig: .quad 0
.globl hook_calls
hook_calls:
.Lcalls: .quad 0
.text
.globl my_fill
.type my_fill,@function
my_fill:
    lock incq .Lcalls(%rip)
    jmp *.Lorig(%rip)
.size my_fill, .-my_fill
.section .note.GNU-stack,"",@progbits
