// What javac compiles once while the image is built, so that the classes it loads doing so
// are kept in a class-data sharing archive (see the Dockerfile): a typical judge submission,
// with the library parts such programs use (collections, streams, lambdas, records, I/O).
import java.io.*;
import java.util.*;
import java.util.function.*;
import java.util.stream.*;

public class Main {
    record Point(int x, int y) {}

    enum Colour { RED, GREEN }

    interface Shape { double area(); }

    static <T extends Comparable<T>> T max(List<T> items) {
        return items.stream().max(Comparator.naturalOrder()).orElseThrow();
    }

    public static void main(String[] args) throws IOException {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        Scanner scanner = new Scanner("1 2 3");
        List<Integer> numbers = new ArrayList<>();
        while (scanner.hasNextInt()) numbers.add(scanner.nextInt());
        Map<String, Integer> counts = new HashMap<>();
        counts.merge("a", 1, Integer::sum);
        Function<Integer, Integer> square = n -> n * n;
        String joined = numbers.stream().map(square).map(String::valueOf).collect(Collectors.joining(","));
        Shape unit = () -> 1.0;
        StringBuilder out = new StringBuilder();
        out.append(String.format("%s %d %.2f %s%n", joined, max(numbers), unit.area(), new Point(1, 2)));
        for (Colour c : Colour.values()) out.append(c.name().toLowerCase());
        int[] array = IntStream.rangeClosed(1, 5).toArray();
        Arrays.sort(array);
        try {
            System.out.print(out + " " + Arrays.toString(array) + " " + counts + in.ready());
        } catch (RuntimeException e) {
            throw new IllegalStateException(e);
        }
    }
}
