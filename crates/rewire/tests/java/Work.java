// 8 threads, each running a hot loop the JIT compiles, throwing and catching exceptions and
// allocating enough for the garbage collector to run; prints a deterministic result.
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

public class Work {
    static long mix(long x) {
        x ^= x >>> 33;
        x *= 0xff51afd7ed558ccdL;
        x ^= x >>> 33;
        return x;
    }

    static int parse(String s) {
        try {
            return Integer.parseInt(s);
        } catch (NumberFormatException e) {
            return -1;
        }
    }

    public static void main(String[] args) throws Exception {
        int rounds = args.length > 0 ? Integer.parseInt(args[0]) : 200;
        AtomicLong total = new AtomicLong();
        AtomicLong caught = new AtomicLong();
        Thread[] threads = new Thread[8];
        for (int t = 0; t < threads.length; t++) {
            final int id = t;
            threads[t] = new Thread(() -> {
                long h = id;
                List<long[]> keep = new ArrayList<>();
                for (int r = 0; r < rounds; r++) {
                    for (int i = 0; i < 20000; i++) {
                        h = mix(h + i);
                    }
                    long[] chunk = new long[2048];
                    chunk[r % 2048] = h;
                    keep.add(chunk);
                    if (keep.size() > 64) {
                        keep.remove(0);
                    }
                    if (parse((r % 7 == 0) ? "x" + r : Integer.toString(r)) < 0) {
                        caught.incrementAndGet();
                    }
                    try {
                        Object o = (r % 5 == 0) ? null : keep;
                        h += o.hashCode() & 0;
                    } catch (NullPointerException e) {
                        caught.incrementAndGet();
                    }
                }
                total.addAndGet(h);
            });
            threads[t].start();
        }
        for (Thread t : threads) {
            t.join();
        }
        System.out.println("total " + total.get() + " caught " + caught.get());
    }
}
