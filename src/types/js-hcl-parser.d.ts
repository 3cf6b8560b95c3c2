// js-hcl-parser ships no types. It is a GopherJS build of hashicorp/hcl v1: `parse` returns
// the document as a JSON string, or a string starting "unable to parse" on a syntax error.
declare module 'js-hcl-parser' {
  const hcl: { parse(text: string): string; stringify(json: string): string };
  export default hcl;
}
