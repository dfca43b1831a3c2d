// runbox-javac's compiler (images/java/runbox-javac starts it): compiles every .java file in
// the work dir into the work dir and writes the fully qualified name of the class to run into
// .runbox-main-class.
//
//   RunboxJavac MAIN_FILE   compile now (a fresh sandbox, a session)
//   RunboxJavac --warm      a reused sandbox's compiler made ahead of its job: javac is warmed
//                           by compiling a program of its own in memory, "warm" is written to
//                           fd 4, then the job's argv is read on fd 7 (its count on a line,
//                           then each argument NUL-terminated; an empty line: no job) and the
//                           compile is done in this JVM, already warm.
//
// Why in Java: javac in a JVM that has just compiled something takes ~40-65 ms for a hello
// world, against ~420 ms in a new one (measured in this image, one CPU, with the class-data
// sharing archive). A reused sandbox makes the JVM for the next job while it waits (see
// runbox's sandbox/nested.rs), so the job pays only the compile. The main class is found from
// javac's own model of the sources (no javap, a second JVM).
//
// Users paste `public class Solution { ... }` into whatever file the form gives them, and javac
// insists that a public class lives in a file of its own name: such files are renamed first.
// The class to run is the one holding `public static void main(String[])`, preferring the class
// named after the entry file when several have one.
import com.sun.source.util.JavacTask;
import com.sun.source.util.TaskEvent;
import com.sun.source.util.TaskListener;
import java.io.ByteArrayOutputStream;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.io.Writer;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import javax.lang.model.element.Element;
import javax.lang.model.element.ExecutableElement;
import javax.lang.model.element.Modifier;
import javax.lang.model.element.TypeElement;
import javax.lang.model.type.ArrayType;
import javax.lang.model.type.TypeKind;
import javax.lang.model.util.ElementFilter;
import javax.lang.model.util.Elements;
import javax.tools.FileObject;
import javax.tools.ForwardingJavaFileManager;
import javax.tools.JavaCompiler;
import javax.tools.JavaFileManager;
import javax.tools.JavaFileObject;
import javax.tools.SimpleJavaFileObject;
import javax.tools.StandardJavaFileManager;
import javax.tools.ToolProvider;

public final class RunboxJavac {
    /// The program name the job's argv starts with (the compile command of languages.toml).
    private static final String COMMAND = "runbox-javac";
    private static final Path WARM_SIGNAL = Path.of("/proc/self/fd/4");
    private static final Path JOB_ARGV = Path.of("/proc/self/fd/7");
    private static final Path TRAINING = Path.of("/usr/local/lib/runbox/CdsTraining.java");

    /// The first top-level public type a source declares (the first line that matches).
    private static final Pattern PUBLIC_TYPE = Pattern.compile(
            "^\\s*public\\s+((final|abstract|sealed|strictfp)\\s+)*(class|interface|enum|record)\\s+([A-Za-z_][A-Za-z0-9_]*)",
            Pattern.MULTILINE);
    private static final Pattern PACKAGE = Pattern.compile(
            "^\\s*package\\s+([A-Za-z0-9_.]+)\\s*;", Pattern.MULTILINE);

    public static void main(String[] args) throws IOException {
        if (args.length == 1 && args[0].equals("--warm")) {
            warm();
            List<String> argv = jobArgv();
            if (argv == null) {
                System.exit(0);
            }
            if (argv.size() != 2 || !argv.get(0).equals(COMMAND)) {
                System.err.println("runbox-javac: a warm compiler takes `" + COMMAND + " MAIN_FILE`");
                System.exit(125);
            }
            System.exit(compile(argv.get(1)));
        }
        if (args.length != 1) {
            System.err.println("usage: " + COMMAND + " MAIN_FILE");
            System.exit(2);
        }
        System.exit(compile(args[0]));
    }

    /// Compiles the work dir (the current directory); the exit status javac's own would be.
    static int compile(String mainFile) throws IOException {
        Path here = Path.of("");
        List<String> sources = javaFiles(here);
        boolean renamed = false;
        for (String source : sources) {
            String typeName = firstMatch(PUBLIC_TYPE, Path.of(source), 4);
            if (typeName == null) {
                continue;
            }
            int slash = source.lastIndexOf('/');
            String wanted = (slash < 0 ? "" : source.substring(0, slash + 1)) + typeName + ".java";
            if (!wanted.equals(source) && !Files.exists(Path.of(wanted))) {
                Files.move(Path.of(source), Path.of(wanted));
                renamed = true;
                if (source.equals(mainFile)) {
                    mainFile = wanted;
                }
            }
        }
        if (renamed) {
            sources = javaFiles(here);
        }

        JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
        StandardJavaFileManager files = javac.getStandardFileManager(null, null, StandardCharsets.UTF_8);
        List<String> options = List.of("-encoding", "UTF-8", "-d", ".");
        PrintWriter diagnostics = new PrintWriter(System.err, true);
        JavacTask task = (JavacTask) javac.getTask(diagnostics, files, null, options, null,
                files.getJavaFileObjectsFromStrings(sources));
        // Every type javac analysed (nested ones too) with a `public static void main(String[])`.
        TreeSet<String> candidates = new TreeSet<>();
        Elements elements = task.getElements();
        task.addTaskListener(new TaskListener() {
            @Override
            public void finished(TaskEvent event) {
                if (event.getKind() == TaskEvent.Kind.ANALYZE && event.getTypeElement() != null) {
                    collectMains(event.getTypeElement(), elements, candidates);
                }
            }
        });
        boolean ok;
        try {
            ok = task.call();
        } catch (RuntimeException e) {
            // What javac's own launcher reports as an abnormal end (exit status 4).
            e.printStackTrace();
            return 4;
        } finally {
            diagnostics.flush();
        }
        if (!ok) {
            return 1;
        }

        String preferred = mainFile.substring(mainFile.lastIndexOf('/') + 1);
        preferred = preferred.endsWith(".java") ? preferred.substring(0, preferred.length() - 5) : preferred;
        String packageName = Files.exists(Path.of(mainFile)) ? firstMatch(PACKAGE, Path.of(mainFile), 1) : null;
        if (packageName != null) {
            preferred = packageName + "." + preferred;
        }
        if (candidates.isEmpty()) {
            System.err.println("error: no class has a method public static void main(String[] args)");
            return 1;
        }
        String mainClass = candidates.contains(preferred) ? preferred : candidates.first();
        Files.writeString(Path.of(".runbox-main-class"), mainClass + "\n");
        return 0;
    }

    /// Every .java file under `dir`, as relative paths in byte order (as `find | sort`).
    static List<String> javaFiles(Path dir) throws IOException {
        List<String> found = new ArrayList<>();
        try (Stream<Path> walk = Files.walk(dir)) {
            walk.filter(p -> p.toString().endsWith(".java") && Files.isRegularFile(p))
                    .forEach(p -> found.add(p.toString()));
        }
        found.sort(null);
        return found;
    }

    static String firstMatch(Pattern pattern, Path file, int group) throws IOException {
        String text;
        try {
            text = Files.readString(file, StandardCharsets.UTF_8);
        } catch (java.nio.charset.MalformedInputException e) {
            text = new String(Files.readAllBytes(file), StandardCharsets.ISO_8859_1);
        }
        Matcher m = pattern.matcher(text);
        return m.find() ? m.group(group) : null;
    }

    static void collectMains(TypeElement type, Elements elements, TreeSet<String> into) {
        for (ExecutableElement method : ElementFilter.methodsIn(type.getEnclosedElements())) {
            if (method.getSimpleName().contentEquals("main")
                    && method.getModifiers().contains(Modifier.PUBLIC)
                    && method.getModifiers().contains(Modifier.STATIC)
                    && method.getReturnType().getKind() == TypeKind.VOID
                    && method.getParameters().size() == 1
                    && isStringArray(method.getParameters().get(0).asType())) {
                into.add(elements.getBinaryName(type).toString());
                break;
            }
        }
        for (Element member : type.getEnclosedElements()) {
            if (member instanceof TypeElement nested) {
                collectMains(nested, elements, into);
            }
        }
    }

    static boolean isStringArray(javax.lang.model.type.TypeMirror type) {
        return type.getKind() == TypeKind.ARRAY
                && ((ArrayType) type).getComponentType().toString().equals("java.lang.String");
    }

    /// Compiles the image's training program in memory (nothing is written), so that javac's
    /// code is loaded and compiled by the JIT before the job's sources arrive; then says so.
    /// Whatever goes wrong here, the job's compile still runs (in a colder JVM).
    static void warm() {
        try {
            String training = Files.readString(TRAINING);
            JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
            StandardJavaFileManager standard = javac.getStandardFileManager(null, null, StandardCharsets.UTF_8);
            JavaFileManager inMemory = new ForwardingJavaFileManager<>(standard) {
                @Override
                public JavaFileObject getJavaFileForOutput(Location location, String className,
                        JavaFileObject.Kind kind, FileObject sibling) {
                    return new SimpleJavaFileObject(URI.create("mem:///" + className + kind.extension), kind) {
                        @Override
                        public OutputStream openOutputStream() {
                            return new ByteArrayOutputStream();
                        }
                    };
                }
            };
            JavaFileObject source = new SimpleJavaFileObject(URI.create("mem:///Main.java"), JavaFileObject.Kind.SOURCE) {
                @Override
                public CharSequence getCharContent(boolean ignoreEncodingErrors) {
                    return training;
                }
            };
            Writer quiet = new StringWriter();
            javac.getTask(quiet, inMemory, null, List.of("-encoding", "UTF-8"), null, List.of(source)).call();
        } catch (Throwable ignored) {
            // A compile of the job's own in a JVM that is not warm yet is still right.
        }
        try (OutputStream signal = new FileOutputStream(WARM_SIGNAL.toFile())) {
            signal.write("warm\n".getBytes(StandardCharsets.US_ASCII));
        } catch (IOException ignored) {
            // No one listens: the runner times its wait out.
        }
    }

    /// The job's argv on fd 7; `null` for an empty line (no job: the sandbox is not used).
    static List<String> jobArgv() throws IOException {
        try (InputStream in = new FileInputStream(JOB_ARGV.toFile())) {
            String count = readUntil(in, '\n');
            if (count == null || count.isEmpty()) {
                return null;
            }
            int argc = Integer.parseInt(count);
            List<String> argv = new ArrayList<>(argc);
            for (int i = 0; i < argc; i++) {
                String arg = readUntil(in, '\0');
                if (arg == null) {
                    return null;
                }
                argv.add(arg);
            }
            return argv;
        }
    }

    /// Bytes up to `end` (not included), one read at a time: nothing past the job's argv is
    /// taken from the pipe.
    static String readUntil(InputStream in, char end) throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        int b;
        while ((b = in.read()) != end) {
            if (b < 0) {
                return null;
            }
            bytes.write(b);
        }
        return bytes.toString(StandardCharsets.UTF_8);
    }
}
