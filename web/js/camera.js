// QR codes from the camera: the browser's BarcodeDetector when it has one, else
// ZXing-C++ compiled to WebAssembly (web/vendor/zxing-wasm, served by us, cached by
// the service worker once used), so iOS Safari and Linux Chromium scan too.

const VENDOR = '/vendor/zxing-wasm';
const READER = `${VENDOR}/es/reader/index.js`;
const WASM = `${VENDOR}/reader/zxing_reader.wasm`;

async function nativeDetector() {
  if (!('BarcodeDetector' in window)) return null;
  try {
    const formats = await window.BarcodeDetector.getSupportedFormats();
    if (!formats.includes('qr_code')) return null;
    return new window.BarcodeDetector({ formats: ['qr_code'] });
  } catch {
    return null;
  }
}

let zxing = null;
function loadZxing() {
  if (!zxing) {
    zxing = import(READER).then(async (mod) => {
      mod.prepareZXingModule({
        overrides: { locateFile: (path, prefix) => (path.endsWith('.wasm') ? WASM : prefix + path) },
        fireImmediately: true,
      });
      return mod;
    });
    zxing.catch(() => { zxing = null; });
  }
  return zxing;
}

/** True when this device can scan with its camera at all. */
export function cameraAvailable() {
  return Boolean(navigator.mediaDevices?.getUserMedia);
}

/** Fetch the decoder ahead (online), so the service worker has it for offline shifts. */
export async function warmDecoder() {
  if (await nativeDetector()) return;
  await Promise.all([fetch(READER), fetch(`${VENDOR}/es/share.js`), fetch(WASM)].map((p) => p.catch(() => null)));
}

/**
 * A detector for video frames: {kind: 'native'|'zxing', detect(video) -> [text...]}.
 */
export async function qrDetector() {
  const native = await nativeDetector();
  if (native) {
    return { kind: 'native', detect: async (video) => (await native.detect(video)).map((c) => c.rawValue) };
  }
  const mod = await loadZxing();
  const canvas = document.createElement('canvas');
  const context = canvas.getContext('2d', { willReadFrequently: true });
  return {
    kind: 'zxing',
    async detect(video) {
      const { videoWidth: w, videoHeight: h } = video;
      if (!w || !h) return [];
      canvas.width = w;
      canvas.height = h;
      context.drawImage(video, 0, 0, w, h);
      const results = await mod.readBarcodes(context.getImageData(0, 0, w, h), { formats: ['QRCode'], maxNumberOfSymbols: 1 });
      return results.filter((r) => r.isValid).map((r) => r.text);
    },
  };
}
