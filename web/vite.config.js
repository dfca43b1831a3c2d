// The bundle runbox serves at `/`: hashed files under /assets (cached for good), index.html
// (never cached), no inline scripts (the page's Content-Security-Policy allows none).
import { defineConfig } from 'vite';

export default defineConfig({
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    emptyOutDir: true,
    modulePreload: { polyfill: false },
    chunkSizeWarningLimit: 2048,
  },
});
