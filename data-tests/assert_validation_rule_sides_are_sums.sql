{#- Validation rule sides must be sums of operands (#{de} or #{de.coc}): the evaluation in
    int_validation_rule_results only adds operands, so anything else would be misread.
    Returns the offending terms. -#}
select rule_id, side, expression, term
from {{ ref('int_validation_rule_operands') }}
where left(term, 2) <> '#{' or right(term, 1) <> '}'
   or term like '%(%' or term like '%)%' or term like '%*%' or term like '%/%'
   or length(term) - length(replace(term, '{', '')) <> 1
   or data_element_id = ''
