// Transaction smoke test for the local broker, run by selftest.sh as a
// single-file Java program:  java -cp "$(kafka.sh classpath)" TxnCheck.java BOOTSTRAP TOPIC
// Commits 5 records and aborts 5, then checks read_committed sees exactly the
// committed ones and read_uncommitted sees all 10.
import java.time.Duration;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class TxnCheck {
    public static void main(String[] args) throws Exception {
        String bs = args[0], topic = args[1];
        Properties p = new Properties();
        p.put("bootstrap.servers", bs);
        p.put("transactional.id", "txncheck-" + System.nanoTime());
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        try (KafkaProducer<String, String> prod = new KafkaProducer<>(p)) {
            prod.initTransactions();
            prod.beginTransaction();
            for (int i = 0; i < 5; i++) prod.send(new ProducerRecord<>(topic, "k" + i, "committed-" + i));
            prod.commitTransaction();
            prod.beginTransaction();
            for (int i = 0; i < 5; i++) prod.send(new ProducerRecord<>(topic, "k" + i, "aborted-" + i));
            prod.flush();
            prod.abortTransaction();
        }
        int committed = count(bs, topic, "read_committed", true);
        int all = count(bs, topic, "read_uncommitted", false);
        System.out.println("read_committed=" + committed + " read_uncommitted=" + all);
        if (committed != 5 || all != 10) {
            System.out.println("TXN CHECK FAILED");
            System.exit(1);
        }
        System.out.println("TXN CHECK OK");
    }

    static int count(String bs, String topic, String iso, boolean checkValues) {
        Properties c = new Properties();
        c.put("bootstrap.servers", bs);
        c.put("isolation.level", iso);
        c.put("key.deserializer", StringDeserializer.class.getName());
        c.put("value.deserializer", StringDeserializer.class.getName());
        int n = 0;
        try (KafkaConsumer<String, String> cons = new KafkaConsumer<>(c)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            cons.assign(List.of(tp));
            cons.seekToBeginning(List.of(tp));
            long deadline = System.currentTimeMillis() + 15000;
            long end = cons.endOffsets(List.of(tp)).get(tp);
            while (cons.position(tp) < end && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : cons.poll(Duration.ofMillis(200))) {
                    if (checkValues && !r.value().startsWith("committed-"))
                        throw new IllegalStateException("read_committed saw " + r.value());
                    n++;
                }
            }
        }
        return n;
    }
}
