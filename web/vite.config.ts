import { defineConfig } from 'vitest/config';
import react from '@vitejs/plugin-react';

// The page is served by `aurum serve` from web/dist at `/`; relative asset
// paths keep it working behind a prefix too.
export default defineConfig({
  base: './',
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
