// Node.js's globals and built-in modules for tsc, which Debian ships without @types/node.
// Deliberately loose (everything from Node is `any`): a program that reads stdin through
// `process`, `fs` or `readline` compiles, and the program's own code is still type-checked.
// runbox compiles with `--lib es2022` (no DOM: 0.5 s less per compile), so the web globals that
// Node also has are declared here.
declare var console: any;
declare var performance: any;
declare var TextEncoder: any;
declare var TextDecoder: any;
declare var URL: any;
declare var URLSearchParams: any;
declare var AbortController: any;
declare function setTimeout(callback: (...args: any[]) => void, ms?: number, ...args: any[]): any;
declare function setInterval(callback: (...args: any[]) => void, ms?: number, ...args: any[]): any;
declare function clearTimeout(handle: any): void;
declare function clearInterval(handle: any): void;
declare function queueMicrotask(callback: () => void): void;
declare function structuredClone<T>(value: T): T;
declare var process: any;
declare var require: any;
declare var module: any;
declare var exports: any;
declare var global: any;
declare var Buffer: any;
declare var __dirname: string;
declare var __filename: string;
declare function setImmediate(callback: (...args: any[]) => void, ...args: any[]): any;
declare function clearImmediate(handle: any): void;

declare module "node:*";
declare module "assert";
declare module "buffer";
declare module "child_process";
declare module "crypto";
declare module "events";
declare module "fs";
declare module "fs/promises";
declare module "os";
declare module "path";
declare module "perf_hooks";
declare module "process";
declare module "readline";
declare module "stream";
declare module "string_decoder";
declare module "timers";
declare module "url";
declare module "util";
declare module "worker_threads";
declare module "zlib";
