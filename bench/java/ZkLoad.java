// A small closed-loop load program on Apache ZooKeeper's own Java client (3.8), so that the
// harness can show that fastzk's Python load generator does not flatter either server: the
// same scenario (getData of 100-byte values) measured with the reference client.
//
// Usage: java ZkLoad CONNECT SESSIONS DEPTH WARMUP_S DURATION_S ROOT KEYS [TIMEOUT_MS [OP]]
// Keys ROOT/k0000000 .. ROOT/k{KEYS-1} must exist (the harness creates them). Each session
// keeps DEPTH asynchronous calls in flight (OP: get, the default, is getData; set is setData
// of 100 bytes, any version); every callback records the latency and issues the next call.
// Prints "measuring" when the measured window opens and "measured" when it closes (the
// harness samples the server's CPU time then), and then one JSON object (latencies in
// microseconds).
//
// Compiled at run time by bench/compare.py:
//   javac -cp /usr/share/java/zookeeper.jar -d OUT bench/java/ZkLoad.java
//   java -cp OUT:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-nop.jar ZkLoad ...

import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.zookeeper.AsyncCallback.DataCallback;
import org.apache.zookeeper.AsyncCallback.StatCallback;
import org.apache.zookeeper.WatchedEvent;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.data.Stat;

public final class ZkLoad {

    /** Log-linear histogram of microseconds: exact below 2048, then 1/1024 relative steps. */
    static final class Histogram {
        static final int LINEAR = 2048;
        static final int SUB = 1024;
        final long[] counts = new long[LINEAR + 40 * SUB];
        long total;
        long max;
        double sum;

        static int index(long v) {
            if (v < LINEAR) {
                return (int) Math.max(v, 0);
            }
            int e = 63 - Long.numberOfLeadingZeros(v); // >= 11
            return LINEAR + (e - 11) * SUB + (int) ((v >> (e - 10)) & (SUB - 1));
        }

        static long value(int idx) {
            if (idx < LINEAR) {
                return idx;
            }
            int e = (idx - LINEAR) / SUB + 11;
            long mant = (idx - LINEAR) % SUB;
            return ((SUB + mant) << (e - 10)) + (1L << (e - 10)) / 2;
        }

        void record(long v) {
            counts[Math.min(index(v), counts.length - 1)]++;
            total++;
            sum += v;
            if (v > max) {
                max = v;
            }
        }

        void add(Histogram o) {
            for (int i = 0; i < counts.length; i++) {
                counts[i] += o.counts[i];
            }
            total += o.total;
            sum += o.sum;
            max = Math.max(max, o.max);
        }

        long percentile(double p) {
            if (total == 0) {
                return 0;
            }
            long want = (long) Math.ceil(p / 100.0 * total);
            long seen = 0;
            for (int i = 0; i < counts.length; i++) {
                seen += counts[i];
                if (seen >= Math.max(want, 1)) {
                    return Math.min(value(i), max);
                }
            }
            return max;
        }
    }

    static volatile boolean running = true;
    static volatile boolean recording = false;

    static final byte[] VALUE = new byte[100];

    /** One session: DEPTH slots, each a chain of getData (or setData) calls. Callbacks run on
     *  the session's event thread only, so its histogram needs no locking. */
    static final class Session implements DataCallback, StatCallback {
        final ZooKeeper zk;
        final String[] paths;
        final boolean set;
        final Histogram hist = new Histogram();
        final Map<Integer, Long> errors = new TreeMap<>();
        final AtomicLong inflight = new AtomicLong();

        Session(ZooKeeper zk, String[] paths, boolean set) {
            this.zk = zk;
            this.paths = paths;
            this.set = set;
        }

        void issue() {
            inflight.incrementAndGet();
            String path = paths[ThreadLocalRandom.current().nextInt(paths.length)];
            if (set) {
                zk.setData(path, VALUE, -1, (StatCallback) this, System.nanoTime());
            } else {
                zk.getData(path, false, (DataCallback) this, System.nanoTime());
            }
        }

        @Override
        public void processResult(int rc, String path, Object ctx, byte[] data, Stat stat) {
            done(rc, ctx);
        }

        @Override
        public void processResult(int rc, String path, Object ctx, Stat stat) {
            done(rc, ctx);
        }

        void done(int rc, Object ctx) {
            long latency = (System.nanoTime() - (Long) ctx) / 1000;
            if (recording) {
                hist.record(latency);
                if (rc != 0) {
                    errors.merge(rc, 1L, Long::sum);
                }
            }
            inflight.decrementAndGet();
            if (running) {
                issue();
            }
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 7) {
            System.err.println("usage: ZkLoad CONNECT SESSIONS DEPTH WARMUP_S DURATION_S ROOT KEYS"
                    + " [TIMEOUT_MS [OP]]");
            System.exit(2);
        }
        String connect = args[0];
        int sessions = Integer.parseInt(args[1]);
        int depth = Integer.parseInt(args[2]);
        double warmup = Double.parseDouble(args[3]);
        double duration = Double.parseDouble(args[4]);
        String root = args[5];
        int keys = Integer.parseInt(args[6]);
        int timeout = args.length > 7 ? Integer.parseInt(args[7]) : 30000;
        String op = args.length > 8 ? args[8] : "get";
        if (!op.equals("get") && !op.equals("set")) {
            System.err.println("OP must be get or set");
            System.exit(2);
        }
        String[] paths = new String[keys];
        for (int i = 0; i < keys; i++) {
            paths[i] = String.format("%s/k%07d", root, i);
        }
        Session[] all = new Session[sessions];
        for (int s = 0; s < sessions; s++) {
            CountDownLatch connected = new CountDownLatch(1);
            Watcher watcher = (WatchedEvent e) -> {
                if (e.getState() == Watcher.Event.KeeperState.SyncConnected) {
                    connected.countDown();
                }
            };
            ZooKeeper zk = new ZooKeeper(connect, timeout, watcher);
            if (!connected.await(20, TimeUnit.SECONDS)) {
                System.err.println("session " + s + " did not connect");
                System.exit(2);
            }
            all[s] = new Session(zk, paths, op.equals("set"));
        }
        for (Session s : all) {
            for (int d = 0; d < depth; d++) {
                s.issue();
            }
        }
        Thread.sleep((long) (warmup * 1000));
        long cpu0 = ((com.sun.management.OperatingSystemMXBean)
                java.lang.management.ManagementFactory.getOperatingSystemMXBean()).getProcessCpuTime();
        long t0 = System.nanoTime();
        recording = true;
        System.out.println("measuring");
        System.out.flush();
        Thread.sleep((long) (duration * 1000));
        recording = false;
        long t1 = System.nanoTime();
        System.out.println("measured");
        System.out.flush();
        long cpu1 = ((com.sun.management.OperatingSystemMXBean)
                java.lang.management.ManagementFactory.getOperatingSystemMXBean()).getProcessCpuTime();
        running = false;
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        for (Session s : all) {
            while (s.inflight.get() > 0 && System.nanoTime() < deadline) {
                Thread.sleep(5);
            }
        }
        for (Session s : all) {
            s.zk.close(2000);
        }
        Histogram total = new Histogram();
        Map<Integer, Long> errors = new TreeMap<>();
        for (Session s : all) {
            total.add(s.hist);
            s.errors.forEach((k, v) -> errors.merge(k, v, Long::sum));
        }
        double elapsed = (t1 - t0) / 1e9;
        long errs = errors.values().stream().mapToLong(Long::longValue).sum();
        StringBuilder err = new StringBuilder("{");
        errors.forEach((k, v) -> err.append(err.length() > 1 ? "," : "")
                .append('"').append(k).append("\":").append(v));
        err.append('}');
        System.out.printf(java.util.Locale.ROOT,
                "{\"client\":\"zookeeper-java-%s\",\"sessions\":%d,\"depth\":%d,\"ops\":%d,"
                        + "\"elapsed\":%.4f,\"ops_per_sec\":%.1f,\"client_cpu\":%.1f,"
                        + "\"errors\":%s,\"latency_us\":{\"p50\":%d,\"p90\":%d,\"p99\":%d,"
                        + "\"p99.9\":%d,\"max\":%d,\"mean\":%.1f}}%n",
                org.apache.zookeeper.Version.getFullVersion().split("[ -]")[0], sessions, depth,
                total.total, elapsed, (total.total - errs) / elapsed,
                (cpu1 - cpu0) / 1e9 / elapsed * 100, err,
                total.percentile(50), total.percentile(90), total.percentile(99),
                total.percentile(99.9), total.max, total.total > 0 ? total.sum / total.total : 0.0);
    }
}
