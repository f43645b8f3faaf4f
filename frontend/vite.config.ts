// Builds the viewer into dist/, which Django serves under /static/viewer/ (STATICFILES_DIRS prefix "viewer").
// The entry keeps a fixed name (viewer.js / viewer.css) so the Django template needs no manifest;
// chunks, the decode worker and the codecs' WASM get content hashes.
import { defineConfig } from "vitest/config";

export default defineConfig({
  base: "/static/viewer/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    chunkSizeWarningLimit: 8000,
    rollupOptions: {
      input: "src/main.ts",
      output: {
        entryFileNames: "viewer.js",
        chunkFileNames: "chunks/[name]-[hash].js",
        assetFileNames: (asset) =>
          asset.names?.some((name) => name.endsWith(".css")) ? "viewer.css" : "assets/[name]-[hash][extname]",
      },
    },
  },
  worker: { format: "es" },
  optimizeDeps: {
    exclude: ["@cornerstonejs/dicom-image-loader"],
    include: ["dicom-parser"],
  },
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
  },
});
