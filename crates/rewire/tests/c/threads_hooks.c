/* Detour adding 1000 to compute(). */
long (*rewire_orig_my_compute)(long);
long my_compute(long x) { return rewire_orig_my_compute(x) + 1000; }
