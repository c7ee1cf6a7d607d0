// A minimal DSBulk-style loader, the load-stage peer when DSBulk itself cannot be fetched.
// CSV (header = column names) -> one prepared INSERT -> executeAsync with at most N requests in flight,
// optionally grouping consecutive rows of one partition into one UNLOGGED batch (DSBulk's batch.mode
// PARTITION_KEY). Empty fields are not written: each row uses the INSERT prepared for its set of non-empty
// columns (a partition's static-only row has no clustering columns, which an unset value cannot express).
// Built on the DataStax Java driver 4.x, the same driver DSBulk uses.
//
// usage: java -cp 'lib/*:classes' JavaLoad HOST PORT KEYSPACE TABLE CSV MAX_CONCURRENT BATCH(0|1)
// prints one JSON line: {"rows":..,"partitions":..,"statements":..,"seconds":..}
import com.datastax.oss.driver.api.core.CqlSession;
import com.datastax.oss.driver.api.core.cql.*;
import com.datastax.oss.driver.api.core.metadata.schema.ColumnMetadata;
import com.datastax.oss.driver.api.core.metadata.schema.TableMetadata;
import com.datastax.oss.driver.api.core.type.DataType;
import com.datastax.oss.driver.api.core.type.DataTypes;
import java.io.*;
import java.math.BigDecimal;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.LocalDate;
import java.util.*;
import java.util.concurrent.Semaphore;
import java.util.concurrent.atomic.AtomicReference;

public class JavaLoad {
  static List<String> parseCsvLine(BufferedReader r) throws IOException {
    String line = r.readLine();
    if (line == null) return null;
    List<String> out = new ArrayList<>();
    StringBuilder cur = new StringBuilder();
    boolean quoted = false;
    while (true) {
      for (int i = 0; i < line.length(); i++) {
        char c = line.charAt(i);
        if (quoted) {
          if (c == '"') {
            if (i + 1 < line.length() && line.charAt(i + 1) == '"') { cur.append('"'); i++; }
            else quoted = false;
          } else cur.append(c);
        } else if (c == '"') quoted = true;
        else if (c == ',') { out.add(cur.toString()); cur.setLength(0); }
        else cur.append(c);
      }
      if (!quoted) break;
      cur.append('\n');
      line = r.readLine();
      if (line == null) throw new IOException("unterminated quoted field");
    }
    out.add(cur.toString());
    return out;
  }

  static Object convert(DataType t, String s) {
    if (t.equals(DataTypes.BIGINT)) return Long.parseLong(s);
    if (t.equals(DataTypes.INT)) return Integer.parseInt(s);
    if (t.equals(DataTypes.TINYINT)) return Byte.parseByte(s);
    if (t.equals(DataTypes.DECIMAL)) return new BigDecimal(s);
    if (t.equals(DataTypes.TIMESTAMP)) return Instant.parse(s.replace(' ', 'T'));  // Arrow writes "date time"
    if (t.equals(DataTypes.DATE)) return LocalDate.parse(s);
    return s;
  }

  public static void main(String[] a) throws Exception {
    String host = a[0]; int port = Integer.parseInt(a[1]); String ks = a[2], table = a[3], csv = a[4];
    int maxConc = Integer.parseInt(a[5]); boolean batch = a[6].equals("1");
    try (CqlSession s = CqlSession.builder().addContactPoint(new InetSocketAddress(host, port))
        .withLocalDatacenter("datacenter1").withKeyspace(ks).build();
         BufferedReader r = new BufferedReader(new InputStreamReader(new FileInputStream(csv), StandardCharsets.UTF_8), 1 << 20)) {
      TableMetadata tm = s.getMetadata().getKeyspace(ks).get().getTable(table).get();
      List<String> header = parseCsvLine(r);
      DataType[] types = new DataType[header.size()];
      for (int i = 0; i < types.length; i++) {
        ColumnMetadata cm = tm.getColumn(header.get(i)).orElseThrow(() -> new IllegalArgumentException("no column"));
        types[i] = cm.getType();
      }
      Map<String, PreparedStatement> prepared = new HashMap<>();
      Semaphore inflight = new Semaphore(maxConc);
      AtomicReference<Throwable> err = new AtomicReference<>();
      long rows = 0, partitions = 0, statements = 0;
      long t0 = System.nanoTime();
      List<BoundStatement> pending = new ArrayList<>();
      String lastKey = null;
      List<String> f;
      while (true) {
        f = parseCsvLine(r);
        String key = f == null ? null : f.get(0);
        if (!pending.isEmpty() && (f == null || !batch || !key.equals(lastKey))) {
          Statement<?> st = pending.size() == 1 ? pending.get(0)
              : BatchStatement.newInstance(DefaultBatchType.UNLOGGED, pending.toArray(new BoundStatement[0]));
          pending = new ArrayList<>();
          inflight.acquire();
          statements++;
          s.executeAsync(st).whenComplete((rs, e) -> { if (e != null) err.compareAndSet(null, e); inflight.release(); });
          if (err.get() != null) throw new RuntimeException(err.get());
        }
        if (f == null) break;
        if (!key.equals(lastKey)) partitions++;
        lastKey = key;
        StringBuilder mask = new StringBuilder(types.length);
        List<String> names = new ArrayList<>();
        for (int i = 0; i < types.length; i++) {
          boolean has = !f.get(i).isEmpty();
          mask.append(has ? '1' : '0');
          if (has) names.add(header.get(i));
        }
        PreparedStatement ps = prepared.computeIfAbsent(mask.toString(), m -> s.prepare(
            "INSERT INTO " + table + " (" + String.join(",", names) + ") VALUES ("
            + String.join(",", Collections.nCopies(names.size(), "?")) + ")"));
        Object[] values = new Object[names.size()];
        int j = 0;
        for (int i = 0; i < types.length; i++) {
          if (!f.get(i).isEmpty()) values[j++] = convert(types[i], f.get(i));
        }
        pending.add(ps.bind(values));
        rows++;
      }
      inflight.acquire(maxConc);
      if (err.get() != null) throw new RuntimeException(err.get());
      double secs = (System.nanoTime() - t0) / 1e9;
      System.out.println("{\"rows\":" + rows + ",\"partitions\":" + partitions + ",\"statements\":" + statements
          + ",\"seconds\":" + secs + "}");
    }
  }
}
